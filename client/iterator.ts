// The async iterator of a client, apart from the client: a buffer between pushes and pulls.

/**
 * An async iterator over the items `subscribe` pushes from now on. Items not pulled yet wait in
 * a buffer without bound. After `end`, it yields what is buffered, then throws `failure()` if
 * that gives an error, else ends. `return()` (a `break` out of `for await`) unsubscribes and
 * drops the buffer.
 */
export function bufferedIterator<T>(
  subscribe: (push: (item: T) => void, end: () => void) => () => void,
  failure: () => unknown,
  ended = false,
): AsyncIterableIterator<T> {
  const buffer: T[] = [];
  let waiting: (() => void)[] = [];
  let settled = false;
  const wake = (): void => {
    for (const resolve of waiting) resolve();
    waiting = [];
  };
  const unsubscribe = subscribe((item) => {
    buffer.push(item);
    wake();
  }, () => {
    ended = true;
    wake();
  });
  return {
    async next() {
      while (!buffer.length && !ended) await new Promise<void>((resolve) => waiting.push(resolve));
      if (buffer.length) return { done: false, value: buffer.shift() as T };
      unsubscribe();
      const error = settled ? undefined : failure();
      settled = true;
      if (error) throw error;
      return { done: true, value: undefined };
    },
    async return() {
      ended = settled = true;
      buffer.length = 0;
      unsubscribe();
      wake();
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}
