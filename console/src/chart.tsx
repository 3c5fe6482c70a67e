/** A uPlot line chart in a Preact component, redrawn when its data changes. */
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface Series {
  readonly label: string;
  readonly stroke: string;
}

export function Chart({
  title,
  x,
  series,
  values,
}: {
  title: string;
  x: readonly number[];
  series: readonly Series[];
  values: readonly (readonly (number | null)[])[];
}) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (box.current === null) return;
    const plot = new uPlot(
      {
        title,
        width: Math.max(320, box.current.clientWidth || 640),
        height: 220,
        series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.stroke, width: 2, spanGaps: false }))],
        axes: [{}, {}],
      },
      [x as number[], ...(values as (number | null)[][])],
      box.current,
    );
    return () => plot.destroy();
  }, [title, x, series, values]);
  return <figure ref={box} class="chart" aria-label={title} />;
}
