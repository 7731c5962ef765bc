import assert from "node:assert/strict";
import { join } from "node:path";
import { allocateBits } from "../src/allocate/allocate_bits.ts";
import { memoryFisherStats } from "../src/allocate/fisher_source.ts";
import { linearPrefixes } from "../src/quantize/quantize_model.ts";
import type { FileFingerprint } from "../src/pipeline/file_hash.ts";
import {
  type Manifest,
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  toolVersions,
} from "../src/pipeline/manifest.ts";
import { resolvePipelineOptions } from "../src/pipeline/options.ts";
import type { ResultRow } from "../src/pipeline/summary.ts";
import { buildReportHtml, type ReportData } from "../src/report/report.ts";
import { esc, lineChart } from "../src/report/svg_charts.ts";
import { randomWeights, tinyConfig } from "./_helpers.ts";
import { Rng } from "../src/util/rng.ts";

/** Bit widths of the sample data (a model this small cannot meet 2 bits with its codebooks). */
const BITS = [5, 7];
/** Chart ids the report draws when the main method follows a plan. */
const CHART_IDS = [
  "rate-distortion",
  "layer-sensitivity",
  "channel-sensitivity",
  ...BITS.map((b) => `group-bits-${b}`),
];

/** Builds report data from real plans of a small synthetic model and made-up results. */
async function sampleReportData(): Promise<ReportData> {
  const config = tinyConfig({
    nLayers: 2,
    dim: 32,
    hiddenDim: 64,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 8,
  });
  const weights = randomWeights(config, 3);
  const rng = new Rng(5);
  const layers = [];
  for (const name of linearPrefixes({ config } as never)) {
    const [rows, cols] = weights.shape(`${name}.weight`);
    layers.push({
      name,
      rows,
      cols,
      aDiag: Float32Array.from({ length: cols }, () => Math.exp(rng.normal())),
      gDiag: Float32Array.from({ length: rows }, () => Math.exp(2 * rng.normal())),
    });
  }
  const stats = memoryFisherStats("memory", layers);
  const plans = [];
  for (const bits of BITS) {
    plans.push({
      bits,
      plan: await allocateBits(stats, weights, {
        bits,
        vectorLength: 2,
        scope: "model",
        quiet: true,
      }),
    });
  }

  const fingerprint = (path: string): FileFingerprint => ({
    path,
    sha256: "0".repeat(64),
    bytes: 1000,
    mtimeMs: 0,
  });
  const row = (method: string, bits: number, bpw: number, ppl: number): ResultRow => ({
    method,
    bits,
    bpw,
    ppl,
    pplStderr: ppl / 20,
    kldMean: 1 / bits,
    kldP99: 4 / bits,
    top1: 1 - 0.1 / bits,
    fileBytes: 2048 * bits,
    quantizeSeconds: 0.5 * bits,
    file: `${method}-${bits}.safetensors`,
  });
  const settings = {
    ...resolvePipelineOptions({ model: "tiny.bin", out: "out", bits: BITS, compare: ["rtn"] }),
    seqLen: 64,
  };
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    tool: toolVersions(),
    settings,
    inputs: { model: fingerprint("tiny.bin"), calibData: [], evalData: [] },
    steps: {},
    results: [
      {
        ...row("original", 0, 0, 12),
        bits: null,
        bpw: null,
        quantizeSeconds: null,
        kldMean: 0,
        kldP99: 0,
        top1: 1,
      },
      row("rsavq", BITS[0], BITS[0] - 0.02, 30),
      row("rtn", BITS[0], BITS[0] - 0.5, 90),
      row("rsavq", BITS[1], BITS[1] - 0.03, 16),
      row("rtn", BITS[1], BITS[1] - 0.5, 25),
    ],
    run: { startedAt: "2026-01-01T00:00:00.000Z", seconds: 1, reused: [], ran: [] },
  };
  return { manifest, plans };
}

Deno.test("buildReportHtml draws every chart and states the 16-bit tensors", async () => {
  const html = buildReportHtml(await sampleReportData());
  for (const id of CHART_IDS) {
    assert.match(html, new RegExp(`<svg id="${id}" class="chart"`), `chart ${id} missing`);
  }
  assert.match(html, /stored in 16 bits \(F16\) and are not counted in bpw/);
  assert.match(html, /<table id="results">/);
  for (const method of ["original", "rsavq", "rtn"]) {
    assert.match(html, new RegExp(`<td>${method}</td>`));
  }
});

Deno.test("buildReportHtml loads nothing from outside the file", async () => {
  const html = buildReportHtml(await sampleReportData());
  // The SVG namespace is an identifier, not a resource, so it is the one URL allowed.
  const withoutNamespace = html.replaceAll(`xmlns="http://www.w3.org/2000/svg"`, "");
  assert.doesNotMatch(withoutNamespace, /\b(src|href)\s*=/i);
  assert.doesNotMatch(withoutNamespace, /url\(|@import|https?:\/\//i);
  assert.doesNotMatch(html, /<script/i);
});

Deno.test("lineChart maps a larger value higher on a log axis", () => {
  const svg = lineChart({
    id: "t",
    title: "t",
    x: { label: "x" },
    y: { label: "y", log: true },
    series: [{ name: "s", color: "#000", points: [[1, 10], [2, 1000]] }],
  });
  const ys = [...svg.matchAll(/<circle class="mark" cx="[\d.]+" cy="([\d.]+)"/g)].map((m) =>
    Number(m[1])
  );
  assert.equal(ys.length, 2);
  assert.ok(ys[1] < ys[0], `y of 1000 (${ys[1]}) should be above y of 10 (${ys[0]})`);
});

Deno.test("esc escapes markup in labels", () => {
  assert.equal(esc(`<b a="1">&`), "&lt;b a=&quot;1&quot;&gt;&amp;");
});

// ---------------------------------------------------------------------------------------
// Rendering in headless Chromium (Debian package `chromium`)

/** Path of Debian's chromium, or null when it is not installed. */
function findChromium(): string | null {
  for (const path of ["/usr/bin/chromium", "/usr/bin/chromium-browser"]) {
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not installed here
    }
  }
  return null;
}

const CHROMIUM = findChromium();
if (CHROMIUM === null) {
  console.error(
    "report_test: chromium not found, skipping the rendering test (install with: apt-get install -y chromium)",
  );
}

/**
 * Script added to a copy of the report: after layout, it writes per chart the rendered
 * size and how many drawn elements have a non-empty bounding box into a <pre>, which
 * --dump-dom then prints.
 */
const MEASURE_SCRIPT = `<script>
addEventListener("load", () => {
  const charts = [...document.querySelectorAll("svg.chart")].map((svg) => {
    const box = svg.getBoundingClientRect();
    const marks = [...svg.querySelectorAll(".mark")];
    const drawn = marks.filter((m) => { const b = m.getBoundingClientRect(); return b.width > 0 || b.height > 0; });
    return { id: svg.id, width: box.width, height: box.height, marks: marks.length, drawn: drawn.length };
  });
  const pre = document.createElement("pre");
  pre.id = "measurements";
  pre.textContent = JSON.stringify(charts);
  document.body.appendChild(pre);
});
</script>`;

async function runChromium(args: string[]): Promise<string> {
  const profile = await Deno.makeTempDir({ prefix: "chromium-profile-" });
  try {
    const out = await new Deno.Command(CHROMIUM!, {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        `--user-data-dir=${profile}`,
        ...args,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(
      out.code,
      0,
      `chromium failed: ${new TextDecoder().decode(out.stderr).slice(-2000)}`,
    );
    return new TextDecoder().decode(out.stdout);
  } finally {
    await Deno.remove(profile, { recursive: true });
  }
}

Deno.test({
  name: "report renders non-empty charts in chromium",
  ignore: CHROMIUM === null,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      const html = buildReportHtml(await sampleReportData());
      const measured = join(dir, "measured.html");
      await Deno.writeTextFile(measured, html.replace("</body>", `${MEASURE_SCRIPT}</body>`));
      const dom = await runChromium([
        "--virtual-time-budget=5000",
        "--dump-dom",
        `file://${measured}`,
      ]);
      const match = /<pre id="measurements">(.*?)<\/pre>/s.exec(dom);
      assert.ok(match, "the measuring script wrote nothing: the page did not load");
      const charts: { id: string; width: number; height: number; marks: number; drawn: number }[] =
        JSON.parse(
          match[1].replaceAll("&quot;", '"').replaceAll("&amp;", "&"),
        );
      assert.deepEqual(charts.map((c) => c.id).sort(), [...CHART_IDS].sort());
      for (const c of charts) {
        assert.ok(c.width > 100, `${c.id} is ${c.width} px wide`);
        assert.ok(c.height > 100, `${c.id} is ${c.height} px high`);
        assert.ok(c.marks > 0, `${c.id} has no data marks`);
        assert.equal(
          c.drawn,
          c.marks,
          `${c.id}: only ${c.drawn} of ${c.marks} marks have a non-empty box`,
        );
      }

      // The untouched report also renders to a screenshot (a PNG of the page).
      const report = join(dir, "report.html");
      await Deno.writeTextFile(report, html);
      const png = join(dir, "report.png");
      await runChromium(["--window-size=1000,2000", `--screenshot=${png}`, `file://${report}`]);
      const bytes = await Deno.readFile(png);
      assert.deepEqual([...bytes.subarray(1, 4)], [0x50, 0x4e, 0x47], "screenshot is not a PNG");
      assert.ok(bytes.length > 20_000, `screenshot of ${bytes.length} bytes looks blank`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
