import t from 'tap';
import { SlidingWindowLimiter } from '../lib/rate-limit.js';

t.test('at most max attempts in any window, per key', async (t) => {
  const limiter = new SlidingWindowLimiter(3, 1000);
  t.teardown(() => limiter.close());
  t.same([0, 100, 200, 300].map((now) => limiter.allow('a', now)), [true, true, true, false]);
  t.ok(limiter.allow('b', 300), 'another key has its own window');
  t.notOk(limiter.allow('a', 999), 'the window slides: the first attempt is still in it');
  t.ok(limiter.allow('a', 1000), 'the first attempt has left the window');
  t.notOk(limiter.allow('a', 1001), 'the second has not');
  t.ok(limiter.allow('a', 1100));
});

t.test('refused attempts do not count', async (t) => {
  const limiter = new SlidingWindowLimiter(1, 1000);
  t.teardown(() => limiter.close());
  t.ok(limiter.allow('a', 0));
  for (let now = 1; now < 1000; now += 100) t.notOk(limiter.allow('a', now));
  t.ok(limiter.allow('a', 1000));
});
