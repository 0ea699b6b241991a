// Collects figures per server, prints them side by side with the ratio airlock/distribution, and
// writes the whole run (figures, raw per-run details, machine, options) as JSON. A figure may also
// carry a reference value (the pull-through workload's direct fetch from the upstream), printed
// after the pair with the ratio airlock/reference.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { join } from 'node:path';

const DECIMALS = { 'req/s': 0, ms: 2, 'MB/s': 0, MiB: 1, s: 3 };

function fmt(value, unit) {
  if (!Number.isFinite(value)) return 'n/a';
  return value.toLocaleString('en-US', { minimumFractionDigits: DECIMALS[unit] ?? 2, maximumFractionDigits: DECIMALS[unit] ?? 2 });
}

export class Report {
  /**
   * @param {string[]} servers labels in display order; the ratio is servers[0] / servers[1]
   * @param {string} [reference] label of an optional third value per figure; a figure that has it
   *   also gets refRatio = servers[0] / reference. Add it before the pair's values.
   */
  constructor(servers, reference) {
    this.servers = servers;
    this.reference = reference;
    this.order = [];
    this.byId = new Map();
    this.details = [];
  }

  /**
   * One value of one figure for one server. `better` says which direction wins, so a reader of
   * the ratio knows whether 0.5 is good (latency, memory) or bad (throughput).
   */
  add({ id, label, unit, better = 'higher', server, value }) {
    let fig = this.byId.get(id);
    if (!fig) {
      fig = { id, label, unit, better, values: {} };
      this.byId.set(id, fig);
      this.order.push(fig);
    }
    fig.values[server] = value;
    const [a, b] = this.servers;
    const ref = this.reference;
    if (ref && ref in fig.values && a in fig.values) fig.refRatio = fig.values[a] / fig.values[ref];
    if (a in fig.values && b in fig.values) {
      fig.ratio = fig.values[a] / fig.values[b];
      process.stdout.write(`${this.line(fig)}\n`);
    }
  }

  /** Raw measurements (latency distributions, every download time...) kept for the JSON only. */
  detail(entry) {
    this.details.push(entry);
  }

  line(fig) {
    const [a, b] = this.servers;
    const ratio = Number.isFinite(fig.ratio) ? fig.ratio.toFixed(2) : 'n/a';
    const ref = this.reference;
    const reference =
      ref && ref in fig.values
        ? `   ${ref} ${fmt(fig.values[ref], fig.unit)}, ${a}/${ref} ${Number.isFinite(fig.refRatio) ? fig.refRatio.toFixed(2) : 'n/a'}`
        : '';
    return (
      `${fig.label.padEnd(56)} ${fig.unit.padEnd(5)} ` +
      `${a} ${fmt(fig.values[a], fig.unit).padStart(9)}   ${b} ${fmt(fig.values[b], fig.unit).padStart(9)}   ` +
      `ratio ${ratio.padStart(5)}  (${fig.better} is better)${reference}`
    );
  }

  print(out = process.stdout) {
    out.write(`\n${'figure'.padEnd(56)} ${'unit'.padEnd(5)} values and ratio ${this.servers.join('/')}\n`);
    for (const fig of this.order) out.write(`${this.line(fig)}\n`);
  }

  /** The README table; the reference columns only when some figure has a reference value. */
  markdown() {
    const [a, b] = this.servers;
    const ref = this.order.some((f) => this.reference in f.values) ? this.reference : undefined;
    const ratio = (x) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
    const rows = [
      `| figure | unit | ${a} | ${b} | ratio ${a}/${b} | better |${ref ? ` ${ref} | ${a}/${ref} |` : ''}`,
      `|---|---|--:|--:|--:|---|${ref ? '--:|--:|' : ''}`,
    ];
    for (const f of this.order) {
      const extra = ref ? (ref in f.values ? ` ${fmt(f.values[ref], f.unit)} | ${ratio(f.refRatio)} |` : '  |  |') : '';
      rows.push(`| ${f.label} | ${f.unit} | ${fmt(f.values[a], f.unit)} | ${fmt(f.values[b], f.unit)} | ${ratio(f.ratio)} | ${f.better} |${extra}`);
    }
    return rows.join('\n');
  }

  toJSON() {
    return { servers: this.servers, reference: this.reference, figures: this.order, details: this.details };
  }
}

export function machineInfo(projectRoot, distributionVersion) {
  const git = (...args) => {
    try {
      return execFileSync('git', args, { cwd: projectRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return undefined;
    }
  };
  const cpu = cpus();
  return {
    cpus: cpu.length,
    cpuModel: cpu[0]?.model,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    node: process.version,
    airlockCommit: git('rev-parse', '--short', 'HEAD'),
    airlockTreeDirty: Boolean(git('status', '--porcelain', '--', 'src')),
    distribution: distributionVersion,
  };
}

/** Writes bench/results/<prefix><ISO timestamp>.json and returns its path. */
export function writeResults(dir, startedAt, data, prefix = '') {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${prefix}${startedAt.toISOString()}.json`);
  writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`);
  return file;
}
