// A tiny typed emitter (the client cannot use Node's EventEmitter in browsers).

/** A map of event names to listener signatures. */
export type EventMap<Events> = { [K in keyof Events]: (...args: never[]) => void };

/**
 * Typed listeners, DOM-like: adding the same listener twice adds it once; a listener that throws
 * does not stop the others or the emitter, its error is rethrown on a later task (in Node an
 * uncaught exception, as with an EventEmitter listener; in a browser, reported on the console).
 * Unlike an EventEmitter, an 'error' with no listener is not thrown.
 */
export class Emitter<Events extends EventMap<Events>> {
  #listeners: { [K in keyof Events]?: Set<Events[K]> } = {};

  /** Calls `listener` on each `name` until `off` or the returned unsubscribe is called. */
  on<K extends keyof Events>(name: K, listener: Events[K]): () => void {
    (this.#listeners[name] ??= new Set()).add(listener);
    return () => this.off(name, listener);
  }

  /** Stops calling `listener` on `name`. */
  off<K extends keyof Events>(name: K, listener: Events[K]): void {
    this.#listeners[name]?.delete(listener);
  }

  /** Calls the listeners of `name`, in the order they were added, with `args`. */
  protected emit<K extends keyof Events>(name: K, ...args: Parameters<Events[K]>): void {
    for (const listener of [...this.#listeners[name] ?? []]) {
      try {
        listener(...args);
      } catch (error) {
        rethrowLater(error);
      }
    }
  }
}

/** Throws `error` on a later task, out of the caller's way (what a browser's reportError does). */
export function rethrowLater(error: unknown): void {
  setTimeout(() => {
    throw error;
  });
}
