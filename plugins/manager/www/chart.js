// A tiny SVG line chart of the last five minutes, fed by the system.load events (about one a second).
// No library: a ring buffer of samples and one polyline redrawn per sample.

const SVG = 'http://www.w3.org/2000/svg';
export const WINDOW_MS = 5 * 60 * 1000;
const W = 300;
const H = 100;

/** Fixed-size ring buffer of {t, v}: old samples fall off, memory never grows. */
export class Ring {
  constructor(capacity = 360) {
    this.capacity = capacity;
    this.items = new Array(capacity);
    this.start = 0;
    this.size = 0;
  }

  push(item) {
    this.items[(this.start + this.size) % this.capacity] = item;
    if (this.size < this.capacity) this.size++;
    else this.start = (this.start + 1) % this.capacity;
  }

  last() {
    return this.size ? this.items[(this.start + this.size - 1) % this.capacity] : undefined;
  }

  *[Symbol.iterator]() {
    for (let k = 0; k < this.size; k++) yield this.items[(this.start + k) % this.capacity];
  }
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

/** An empty chart (values are percents, 0..100). Stretched to its box by CSS. */
export function createChart(id, label) {
  const root = svg('svg', {
    id, class: 'chart', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none',
    role: 'img', 'aria-label': label, 'data-samples': 0,
  });
  for (const y of [25, 50, 75]) root.append(svg('line', { class: 'grid', x1: 0, x2: W, y1: y, y2: y }));
  root.append(svg('polygon', { class: 'area', points: '' }));
  root.append(svg('polyline', { class: 'line', points: '', 'vector-effect': 'non-scaling-stroke' }));
  return root;
}

/** Draw the samples of the last five minutes up to the newest one (the right edge). */
export function drawChart(root, ring) {
  const newest = ring.last();
  const points = [];
  if (newest) {
    for (const { t, v } of ring) {
      const age = newest.t - t;
      if (age > WINDOW_MS || age < 0) continue;
      const x = W - (age / WINDOW_MS) * W;
      const y = H - (Math.min(100, Math.max(0, v)) / 100) * H;
      points.push(x.toFixed(1) + ',' + y.toFixed(1));
    }
  }
  const line = points.join(' ');
  root.querySelector('.line').setAttribute('points', line);
  // The shaded area closes the line down to the baseline.
  const area = points.length ? `${points[0].split(',')[0]},${H} ${line} ${W},${H}` : '';
  root.querySelector('.area').setAttribute('points', area);
  root.setAttribute('data-samples', String(points.length));
}
