// Charts: time series (uPlot, zoom by dragging), sparklines (SVG).
import { html, useEffect, useRef } from './vendor/preact-htm.js';
import uPlot from './vendor/uplot.js';
import { formatClock } from './format.js';
import { navigate } from './route.js';

/**
 * A time-series chart. `series`: [{ label, color, values }], one value per `times` entry (unix
 * seconds; null for a gap). Dragging across it calls `onZoom(startSeconds, endSeconds)`.
 * Charts with the same `sync` key share their cursor.
 */
export function TimeChart({ title, times, series, format, onZoom, height = 170, sync = 'dashboard', testId, marks = [] }) {
  const holder = useRef(null);
  const plot = useRef(null);
  const zoom = useRef(onZoom);
  zoom.current = onZoom;
  const marked = useRef(marks);
  marked.current = marks;
  const sparse = (s) => s.values.filter((v) => v !== null && v !== undefined).length <= 20;
  const shape = series.map((s) => `${s.label}:${sparse(s)}`).join('|');

  useEffect(() => {
    const element = holder.current;
    const options = {
      width: Math.max(200, element.clientWidth),
      height,
      cursor: { sync: { key: sync }, drag: { x: true, y: false, setScale: false } },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: (_u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [
        { stroke: '#5b6670', grid: { stroke: '#eef1f4' }, ticks: { stroke: '#dde3e8' } },
        { stroke: '#5b6670', grid: { stroke: '#eef1f4' }, ticks: { stroke: '#dde3e8' }, size: 64, values: (_u, ticks) => ticks.map((v) => format(v)) },
      ],
      series: [
        { value: (_u, v) => (v === null ? '–' : formatClock(v, true)) },
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          fill: series.length === 1 ? `${s.color}22` : undefined,
          // Isolated values (a young window, sparse traffic) would be invisible as lines.
          points: { show: sparse(s) },
          spanGaps: false,
          value: (_u, v) => (v === null || v === undefined ? '–' : format(v)),
        })),
      ],
      hooks: {
        draw: [(u) => placeMarks(u, marked.current)],
        setSelect: [
          (u) => {
            if (u.select.width < 4 || !zoom.current) return;
            const start = u.posToVal(u.select.left, 'x');
            const end = u.posToVal(u.select.left + u.select.width, 'x');
            u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
            zoom.current(start, end);
          },
        ],
      },
    };
    plot.current = new uPlot(options, [times, ...series.map((s) => s.values)], element);
    const resize = new ResizeObserver(() => {
      const width = Math.max(200, element.clientWidth);
      if (plot.current && Math.abs(plot.current.width - width) > 1) plot.current.setSize({ width, height });
    });
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [shape, height, sync]);

  useEffect(() => {
    plot.current?.setData([times, ...series.map((s) => s.values)]);
  }, [times, series, marks]);

  return html`<figure class="chart" data-testid=${testId}>
    <figcaption>${title}</figcaption>
    <div class="chart-plot" ref=${holder}></div>
  </figure>`;
}

/**
 * Draws `marks` ([{ t, v, title, to, color? }], t in unix seconds) as links over the plot at
 * their time and value, as Grafana draws exemplars; a value above the axis sits at its top.
 */
function placeMarks(u, marks) {
  for (const old of u.over.querySelectorAll('.chart-mark')) old.remove();
  const [min, max] = [u.scales.x.min, u.scales.x.max];
  for (const mark of marks) {
    if (mark.t < min || mark.t > max) continue;
    const a = document.createElement('a');
    a.className = 'chart-mark';
    a.href = mark.to;
    a.title = mark.title;
    a.style.left = `${u.valToPos(mark.t, 'x')}px`;
    a.style.top = `${Math.max(0, u.valToPos(mark.v, 'y'))}px`;
    if (mark.color) a.style.borderColor = mark.color;
    a.addEventListener('click', (event) => {
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      navigate(mark.to);
    });
    u.over.appendChild(a);
  }
}

/** A small line of `values` (nulls break it), scaled to its own range. */
export function Sparkline({ values, color = '#4e79a7', width = 110, height = 26, label }) {
  const finite = values.filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  if (finite.length === 0) return html`<span class="muted small">no data</span>`;
  const max = Math.max(...finite);
  const min = Math.min(0, ...finite);
  const span = max - min || 1;
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  const segments = [];
  let current = [];
  values.forEach((v, i) => {
    if (v === null || v === undefined || !Number.isFinite(v)) {
      if (current.length) segments.push(current);
      current = [];
    } else {
      current.push(`${(i * step).toFixed(1)},${(height - 2 - ((v - min) / span) * (height - 4)).toFixed(1)}`);
    }
  });
  if (current.length) segments.push(current);
  return html`<svg class="sparkline" width=${width} height=${height} viewBox="0 0 ${width} ${height}" role="img" aria-label=${label}>
    ${segments.map((points) => points.length === 1
      ? html`<circle cx=${points[0].split(',')[0]} cy=${points[0].split(',')[1]} r="1.5" fill=${color} />`
      : html`<polyline points=${points.join(' ')} fill="none" stroke=${color} stroke-width="1.5" />`)}
  </svg>`;
}
