// The fan-out chart of bench/RESULTS.md: time from commit to all clients having the 1,000 events,
// against the number of clients, ours (v1 clients, and v2 clients) and the bare ws broadcast
// (medians, with each round's figure as a dot). Plain SVG text: no dependency, and GitHub shows
// it in the README.
import type { FanoutDetail } from './fanout.js';
import { median } from './support.js';

const WIDTH = 640;
const HEIGHT = 360;
const MARGIN = { left: 64, right: 190, top: 30, bottom: 48 };

/** A round number of milliseconds for the axis's top, and its tick step. */
function axis(max: number): { top: number; step: number } {
  const step = [50, 100, 200, 250, 500, 1000, 2000, 5000].find((candidate) => max / candidate <= 6) ?? 10_000;
  return { top: Math.ceil(max / step) * step, step };
}

export function fanoutChart(sizes: FanoutDetail['sizes']): string {
  const clients = sizes.map((size) => size.clients);
  const maxClients = Math.max(...clients);
  const { top, step } = axis(Math.max(...sizes.flatMap((size) => [...size.oursMs, ...size.oursV2Ms, ...size.referenceMs])));
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const x = (count: number): number => MARGIN.left + (count / maxClients) * plotWidth;
  const y = (ms: number): number => MARGIN.top + plotHeight - (ms / top) * plotHeight;
  const series = [
    { label: 'ours, v1 clients', color: '#d9480f', pick: (size: FanoutDetail['sizes'][number]) => size.oursMs },
    { label: 'ours, v2 clients', color: '#2f9e44', pick: (size: FanoutDetail['sizes'][number]) => size.oursV2Ms },
    { label: 'bare ws broadcast', color: '#1c7ed6', pick: (size: FanoutDetail['sizes'][number]) => size.referenceMs },
  ];
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${MARGIN.left}" y="18" font-size="14" font-weight="bold">Fan-out of one 1,000-event message (median of rounds)</text>`,
  ];
  for (let ms = 0; ms <= top; ms += step) {
    parts.push(`<line x1="${MARGIN.left}" x2="${MARGIN.left + plotWidth}" y1="${y(ms)}" y2="${y(ms)}" stroke="#e9ecef"/>`,
      `<text x="${MARGIN.left - 8}" y="${y(ms) + 4}" text-anchor="end">${ms} ms</text>`);
  }
  for (const count of clients) {
    parts.push(`<text x="${x(count)}" y="${MARGIN.top + plotHeight + 18}" text-anchor="middle">${count.toLocaleString('en-US')}</text>`);
  }
  parts.push(`<text x="${MARGIN.left + plotWidth / 2}" y="${HEIGHT - 8}" text-anchor="middle">clients</text>`,
    `<line x1="${MARGIN.left}" x2="${MARGIN.left}" y1="${MARGIN.top}" y2="${MARGIN.top + plotHeight}" stroke="#495057"/>`,
    `<line x1="${MARGIN.left}" x2="${MARGIN.left + plotWidth}" y1="${MARGIN.top + plotHeight}" y2="${MARGIN.top + plotHeight}" stroke="#495057"/>`);
  series.forEach(({ label, color, pick }, index) => {
    const points = sizes.map((size) => `${x(size.clients).toFixed(1)},${y(median(pick(size))).toFixed(1)}`).join(' ');
    parts.push(`<polyline points="${points}" fill="none" stroke="${color}" stroke-width="2.5"/>`);
    for (const size of sizes) {
      for (const ms of pick(size)) parts.push(`<circle cx="${x(size.clients).toFixed(1)}" cy="${y(ms).toFixed(1)}" r="2" fill="${color}" opacity="0.4"/>`);
      parts.push(`<circle cx="${x(size.clients).toFixed(1)}" cy="${y(median(pick(size))).toFixed(1)}" r="4" fill="${color}"/>`);
    }
    const legendY = MARGIN.top + 10 + index * 20;
    parts.push(`<line x1="${WIDTH - MARGIN.right + 12}" x2="${WIDTH - MARGIN.right + 32}" y1="${legendY}" y2="${legendY}" stroke="${color}" stroke-width="2.5"/>`,
      `<text x="${WIDTH - MARGIN.right + 38}" y="${legendY + 4}">${label}</text>`);
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
