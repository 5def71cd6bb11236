// Two small live charts, drawn as inline SVG: events per second over the last minute, and the
// size of the last messages (bars of caught-up messages in their own colour). Each chart's
// numbers are also a sentence under it, which is what a screen reader reads for the picture.
import { formatBytes, plural, svg } from './dom.js';

const SECONDS = 60;
const MESSAGES = 40;
/** The charts' viewBox (see index.html); bars stretch with the width. */
const WIDTH = 240;
const HEIGHT = 60;
/** Room kept above the highest bar. */
const TOP = 4;

interface Sample {
  receivedAt: Date;
  events: number;
  bytes: number;
  caughtUp: boolean;
}

/** The two charts and their summaries; `record` each message, `clear` on sign-in. */
export class LiveChart {
  /** Events received per epoch second. */
  #perSecond = new Map<number, number>();
  #messages: Sample[] = [];
  readonly #rate: { chart: SVGSVGElement; summary: HTMLElement };
  readonly #size: { chart: SVGSVGElement; summary: HTMLElement };
  #pending = false;

  constructor(rate: { chart: SVGSVGElement; summary: HTMLElement }, size: { chart: SVGSVGElement; summary: HTMLElement }) {
    this.#rate = rate;
    this.#size = size;
    // The minute slides on without messages too.
    setInterval(() => this.#draw(), 1000);
    this.#draw();
  }

  record(sample: Sample): void {
    const second = Math.floor(sample.receivedAt.getTime() / 1000);
    this.#perSecond.set(second, (this.#perSecond.get(second) ?? 0) + sample.events);
    this.#messages.push(sample);
    if (this.#messages.length > MESSAGES) this.#messages.shift();
    this.#schedule();
  }

  clear(): void {
    this.#perSecond.clear();
    this.#messages = [];
    this.#schedule();
  }

  /** Draws at most once a frame, however many messages arrive in it. */
  #schedule(): void {
    if (this.#pending) return;
    this.#pending = true;
    requestAnimationFrame(() => {
      this.#pending = false;
      this.#draw();
    });
  }

  #draw(): void {
    this.#drawRate();
    this.#drawSizes();
  }

  #drawRate(): void {
    const now = Math.floor(Date.now() / 1000);
    for (const second of this.#perSecond.keys()) if (second <= now - SECONDS) this.#perSecond.delete(second);
    const counts = Array.from({ length: SECONDS }, (_, i) => this.#perSecond.get(now - SECONDS + 1 + i) ?? 0);
    const peak = Math.max(...counts);
    const slot = WIDTH / SECONDS;
    bars(this.#rate.chart, counts.map((count, i) => ({
      x: i * slot, width: slot * 0.7, height: peak ? (count / peak) * (HEIGHT - TOP) : 0,
      title: `${SECONDS - 1 - i} s ago: ${plural(count, 'event')}`, className: 'bar',
    })));
    const total = counts.reduce((sum, count) => sum + count, 0);
    this.#rate.summary.textContent = total
      ? `${plural(total, 'event')} in the last minute · peak ${peak.toLocaleString('en')}/s · now ${(counts.at(-1) ?? 0).toLocaleString('en')}/s`
      : 'No events in the last minute';
  }

  #drawSizes(): void {
    const samples = this.#messages;
    const largest = Math.max(0, ...samples.map((sample) => sample.bytes));
    const slot = WIDTH / MESSAGES;
    const offset = MESSAGES - samples.length; // the newest bar is always on the right
    bars(this.#size.chart, samples.map((sample, i) => ({
      x: (offset + i) * slot, width: slot * 0.7, height: largest ? Math.max(1, (sample.bytes / largest) * (HEIGHT - TOP)) : 0,
      title: `${sample.receivedAt.toLocaleTimeString()}: ${plural(sample.events, 'event')}, ${formatBytes(sample.bytes)}${sample.caughtUp ? ' (caught up)' : ''}`,
      className: sample.caughtUp ? 'bar caught-up' : 'bar',
    })));
    const last = samples.at(-1);
    this.#size.summary.textContent = last
      ? `Last: ${formatBytes(last.bytes)} (${plural(last.events, 'event')}) · largest ${formatBytes(largest)}${samples.some((sample) => sample.caughtUp) ? ' · violet: caught up' : ''}`
      : 'No messages yet';
  }
}

/** Replaces a chart's bars (bottom-aligned), over a baseline. */
function bars(chart: SVGSVGElement, specs: { x: number; width: number; height: number; title: string; className: string }[]): void {
  chart.replaceChildren(
    svg('line', { x1: 0, x2: WIDTH, y1: HEIGHT - 0.5, y2: HEIGHT - 0.5, class: 'baseline', 'vector-effect': 'non-scaling-stroke' }),
    ...specs.filter((spec) => spec.height > 0).map((spec) => svg('rect', {
      x: spec.x.toFixed(2), y: (HEIGHT - spec.height).toFixed(2), width: spec.width.toFixed(2), height: spec.height.toFixed(2), class: spec.className,
    }, spec.title)),
  );
}
