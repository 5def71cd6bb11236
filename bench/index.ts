// `npm run bench`: every measurement of issue 4 and of protocol v2 (issue 11), each against its
// reference in the same run, one after another (each on a fresh database, nothing else running):
// the write path under pgbench, a 100k-row UPDATE delivered, fan-out against a bare ws
// broadcaster (v1 and v2 clients), memory per idle connection, commit → client latency under a
// steady write rate, a v2 resume of a 100k-event backlog, a reconnect storm of 1,000 v2 clients,
// and scale-out: 1, 2, 4, 8 instances on one database (issue 14).
// Prints one table, writes the JSON to bench/results/, and writes bench/RESULTS.md with the chart
// bench/fanout.svg (fan-out time against clients, ours and bare ws). Exit code 1 when a target is
// missed. `--only write,bulk,fanout,memory,latency,resume,storm,scale` runs a subset (RESULTS.md is then
// left alone).
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { measure as bulk } from './bulk.js';
import { fanoutChart } from './chart.js';
import { measure as fanout, type FanoutDetail } from './fanout.js';
import { measure as latency } from './latency.js';
import { measure as memory } from './memory.js';
import { measure as resume } from './resume.js';
import { measure as scale } from './scale-out.js';
import { printBenchRows } from './standalone.js';
import { measure as storm } from './storm.js';
import { machine, targetText, verdict, withBenchDatabase, writeResult, type BenchRow } from './support.js';
import { measure as writePath } from './write-path.js';

const FANOUT_CLIENTS = [1000, 2000, 4000];

type Bench = (databaseUrl: string, log: (line: string) => void) => Promise<{ rows: BenchRow[]; detail: unknown }>;

const BENCHES: Record<string, Bench> = {
  write: (databaseUrl, log) => writePath({ databaseUrl, log }),
  bulk: (databaseUrl, log) => bulk({ databaseUrl, log }),
  fanout: (databaseUrl, log) => fanout({ databaseUrl, clients: FANOUT_CLIENTS, log }),
  memory: (databaseUrl, log) => memory({ databaseUrl, log }),
  latency: (databaseUrl, log) => latency({ databaseUrl, log }),
  resume: (databaseUrl, log) => resume({ databaseUrl, log }),
  storm: (databaseUrl, log) => storm({ databaseUrl, log }),
  scale: (databaseUrl, log) => scale({ databaseUrl, log }),
};

function number(value: number, unit: string): string {
  return `${value.toLocaleString('en-US', { maximumFractionDigits: unit === 'KB' || unit === 'queries' || unit === 'ms/s' ? 2 : 0 })} ${unit}`;
}

function markdownTable(rows: readonly BenchRow[]): string {
  const lines = ['| measurement | ours | reference | ratio | target | met |', '|---|---:|---:|---:|---|---|'];
  for (const row of rows) {
    const { ratio, met } = verdict(row);
    lines.push(`| ${row.name} | ${number(row.ours, row.unit)} | ${row.reference.label}: ${number(row.reference.value, row.unit)} | ${ratio.toFixed(2)}× | ${targetText(row)} | ${row.target ? (met ? 'yes' : '**no**') : '—'} |`);
  }
  return lines.join('\n');
}

/** The PostgreSQL server's version, e.g. '15.19 (Debian 15.19-0+deb12u1)'. */
async function serverVersion(databaseUrl: string): Promise<string> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    return (await client.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version ?? 'unknown';
  } finally {
    await client.end();
  }
}

function resultsMarkdown(started: Date, seconds: number, postgres: string, rows: readonly BenchRow[], file: string): string {
  const host = machine();
  return `# Benchmark results

The latest full run of \`npm run bench\` (the measurements of issues 4, 11 (protocol v2) and 14,
each against its reference in the same run). Written by the run itself; its JSON is \`${file.replace(/^.*\/bench\//, 'bench/')}\` (git-ignored).

- Date: ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC, ${Math.round(seconds / 60)} min
- Machine: ${host.cpus} × ${host.cpuModel}, ${host.memoryGiB} GiB, ${host.platform}, Node.js ${host.node}
- PostgreSQL ${postgres}, ${process.env.TEST_DATABASE_URL || process.env.DATABASE_URL ? 'the server at TEST_DATABASE_URL / DATABASE_URL' : 'embedded (a throwaway cluster)'}

${markdownTable(rows)}

How each is measured: the header comment of its file in bench/ (write-path.ts, bulk.ts, fanout.ts,
memory.ts, latency.ts, resume.ts, storm.ts, scale-out.ts). Fan-out time against the number of clients (v1 and v2 clients):

![Fan-out: commit → all clients have 1,000 events, ours vs a bare ws broadcast](fanout.svg)
`;
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { only: { type: 'string' } } });
  const names = values.only ? values.only.split(',').map((name) => name.trim()) : Object.keys(BENCHES);
  for (const name of names) if (!BENCHES[name]) throw new Error(`--only: unknown bench '${name}' (known: ${Object.keys(BENCHES).join(', ')})`);
  const started = new Date();
  const rows: BenchRow[] = [];
  const details: Record<string, unknown> = {};
  let postgres = 'unknown';
  for (const name of names) {
    const log = (line: string): void => console.log(`# [${((Date.now() - started.getTime()) / 1000).toFixed(0)} s] ${name}: ${line}`);
    const result = await withBenchDatabase(async (database) => {
      postgres = await serverVersion(database.url);
      return (BENCHES[name] as Bench)(database.url, log);
    });
    printBenchRows(result.rows);
    rows.push(...result.rows);
    details[name] = result.detail;
  }
  console.log('');
  printBenchRows(rows);
  const file = await writeResult('bench', started, { postgres, benches: names, rows: rows.map((row) => ({ ...row, ...verdict(row) })), details });
  console.log(`# written to ${file}`);
  if (!values.only) {
    const seconds = (Date.now() - started.getTime()) / 1000;
    await writeFile(new URL('./RESULTS.md', import.meta.url), resultsMarkdown(started, seconds, postgres, rows, file));
    await writeFile(new URL('./fanout.svg', import.meta.url), fanoutChart((details.fanout as FanoutDetail).sizes));
    console.log('# bench/RESULTS.md and bench/fanout.svg written');
  }
  return rows.every((row) => verdict(row).met) ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
