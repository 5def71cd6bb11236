// Who the chaos run's clients are: the long-lived ones, what those that come and go subscribe
// to, and how they leave.
import type { ClientSpec } from '../../harness/delivery/tracked.js';

/** What a client subscribes to: its environment and filter. */
export type Subscription = Omit<ClientSpec, 'name'>;

/** The clients that stay connected for the whole run. */
export const LONG_LIVED: readonly ClientSpec[] = [
  { name: 'acme', environmentId: 1, objectClassIds: null },
  { name: 'acme [1]', environmentId: 1, objectClassIds: [1] },
  { name: 'acme [2,3]', environmentId: 1, objectClassIds: [2, 3] },
  { name: 'globex', environmentId: 2, objectClassIds: null },
];

/** What the clients that come and go subscribe to; the last two name another tenant's class. */
export const CHURNING: readonly Subscription[] = [
  { environmentId: 1, objectClassIds: null },
  { environmentId: 1, objectClassIds: null },
  { environmentId: 1, objectClassIds: [1] },
  { environmentId: 1, objectClassIds: [2, 3] },
  { environmentId: 1, objectClassIds: [3] },
  { environmentId: 1, objectClassIds: [1, 2, 3] },
  { environmentId: 2, objectClassIds: null },
  { environmentId: 2, objectClassIds: [4] },
  { environmentId: 1, objectClassIds: [4] },
  { environmentId: 2, objectClassIds: [1] },
];

/** How a client leaves: after taking what it is owed, with a close or by dropping the socket; or at once. */
export type Leave = 'close' | 'drop' | 'abrupt';
export const LEAVES: readonly Leave[] = ['close', 'close', 'close', 'close', 'close', 'drop', 'abrupt'];

/** A client's name in the report: its tenant and filter. */
export const label = (spec: Subscription): string =>
  `${spec.environmentId === 1 ? 'acme' : 'globex'}${spec.objectClassIds ? ` [${spec.objectClassIds.join(',')}]` : ''}`;
