// PostgreSQL snapshots (pg_snapshot: `xmin:xmax:xip,…`) in JavaScript: which transactions a
// snapshot sees. The listener's reads and the v2 cursors are both stated in snapshots, so the
// hub can tell, per event (its transaction's xid), which side of a cursor it is on. Pure.

/** A snapshot: every transaction below `xmin` had ended; none from `xmax` on had started; `xip` were running. */
export interface Snapshot {
  readonly xmin: number;
  readonly xmax: number;
  readonly xip: ReadonlySet<number>;
  /** As PostgreSQL writes it: `xmin:xmax:xip,…`. */
  readonly text: string;
}

const SNAPSHOT_TEXT = /^(\d{1,15}):(\d{1,15}):((?:\d{1,15}(?:,\d{1,15})*)?)$/;

/** Parses `xmin:xmax:xip,…`; `null` when it is not one (xids as 64-bit xid8, safe up to 2⁵³). */
export function parseSnapshot(text: string): Snapshot | null {
  const match = SNAPSHOT_TEXT.exec(text);
  if (!match) return null;
  const xmin = Number(match[1]);
  const xmax = Number(match[2]);
  const xip = match[3] ? match[3].split(',').map(Number) : [];
  if (xmin > xmax || xip.some((xid) => xid < xmin || xid >= xmax)) return null;
  return { xmin, xmax, xip: new Set(xip), text };
}

/** Whether the transaction `xid` (committed) is visible to `snapshot`: it had committed before it was taken. */
export function visible(snapshot: Snapshot, xid: number): boolean {
  return xid < snapshot.xmin || (xid < snapshot.xmax && !snapshot.xip.has(xid));
}

/** Whether `later` sees every transaction `earlier` sees (it was taken at or after it). */
export function covers(later: Snapshot, earlier: Snapshot): boolean {
  if (later.xmax < earlier.xmax) return false;
  for (const xid of later.xip) if (xid < earlier.xmax && !earlier.xip.has(xid)) return false;
  return true;
}

/** The later of two snapshots (by {@link covers}); `a` when they are the same. */
export function later(a: Snapshot, b: Snapshot): Snapshot {
  return covers(b, a) && !covers(a, b) ? b : a;
}

/**
 * The transactions `upto` sees and `since` does not (`upto` taken at or after `since`), as xid
 * ranges with exclusive bounds and single xids: from `since`'s xmax to `upto`'s, around the
 * transactions `upto` saw running; and those `since` saw running that had ended by `upto`. Empty
 * when nothing can have committed in between.
 */
export function unseen(since: Snapshot, upto: Snapshot): { ranges: [above: number, below: number][]; xids: number[] } {
  const running = [...upto.xip].filter((xid) => xid >= since.xmax).sort((a, b) => a - b);
  const bounds = [since.xmax - 1, ...running, upto.xmax];
  const ranges: [number, number][] = [];
  for (let i = 1; i < bounds.length; i++) {
    const above = bounds[i - 1] as number;
    const below = bounds[i] as number;
    if (below - above > 1) ranges.push([above, below]);
  }
  return { ranges, xids: [...since.xip].filter((xid) => !upto.xip.has(xid)).sort((a, b) => a - b) };
}
