// Cleanup steps, registered as they are made and run last-in first-out. tap's Test is a
// Teardowns; a run outside tap (the chaos run) uses a TeardownStack.

/** Where a helper registers the cleanup of what it made: tap's Test, or a {@link TeardownStack}. */
export interface Teardowns {
  teardown(step: () => unknown): void;
}

/** Teardowns for code that runs outside tap; `run()` runs them last-in first-out, as tap does. */
export class TeardownStack implements Teardowns {
  readonly #steps: (() => unknown)[] = [];

  teardown(step: () => unknown): void {
    this.#steps.push(step);
  }

  /** Runs every step, the last added first; a failing step is reported and the rest still run. */
  async run(): Promise<void> {
    for (let step = this.#steps.pop(); step; step = this.#steps.pop()) {
      try {
        await step();
      } catch (error) {
        console.error(`teardown failed: ${(error as Error).message}`);
      }
    }
  }
}

/** For sockets the caller closes itself: no teardown kept (a list of them would keep every client alive). */
export const NO_TEARDOWN: Teardowns = { teardown: () => {} };
