// The graphile-worker reference of switchboard-bench's `serve` measurement: how fast one
// graphile-worker process drains no-op jobs.
//
//   npm ci && node drain.js postgres://postgres@127.0.0.1:5432/scratch [jobs] [concurrency]
//
// (or DATABASE_URL, JOBS, CONCURRENCY in the environment). On that database (a fresh one: its
// `graphile_worker` schema is created, and its jobs are the only ones counted) it
//   1. runs graphile-worker's migrations,
//   2. queues N no-op jobs (default 10,000) in bulk, with `graphile_worker.add_jobs` over
//      `generate_series`, before any worker runs,
//   3. starts ONE worker (`run`, concurrency 24 by default, a `noop` task) and times from its
//      start until `graphile_worker._private_jobs` is empty (completed jobs are deleted),
// and prints one JSON line: {"jobs", "concurrency", "seconds", "jobs_per_sec", "version"}.
"use strict";

const { Logger, run, runMigrations, makeWorkerUtils } = require("graphile-worker");
const { version } = require("graphile-worker/package.json");

const connectionString = process.argv[2] || process.env.DATABASE_URL;
const jobs = Number(process.argv[3] || process.env.JOBS || 10000);
const concurrency = Number(process.argv[4] || process.env.CONCURRENCY || 24);
// Jobs added per `add_jobs` call.
const CHUNK = 10000;

// Warnings and errors only, on stderr: stdout is the one JSON line.
const logFactory = () => (level, message) => {
  if (level === "error" || level === "warning") {
    console.error(`[graphile-worker ${level}] ${message}`);
  }
};
const logger = new Logger(logFactory);

async function main() {
  if (!connectionString) {
    throw new Error("usage: node drain.js <postgres url> [jobs] [concurrency] (or DATABASE_URL)");
  }
  await runMigrations({ connectionString, logger });
  const utils = await makeWorkerUtils({ connectionString, logger });
  const count = async () =>
    utils.withPgClient(async (c) => Number((await c.query("select count(*) as n from graphile_worker._private_jobs")).rows[0].n));
  try {
    for (let queued = 0; queued < jobs; queued += CHUNK) {
      const n = Math.min(CHUNK, jobs - queued);
      await utils.withPgClient((c) =>
        c.query(
          `select count(*) from graphile_worker.add_jobs(
             (select array_agg(('noop', '{}'::json, null, null, null, null, null, null)::graphile_worker.job_spec)
              from generate_series(1, $1::int)))`,
          [n],
        ),
      );
    }
    const pending = await count();
    if (pending !== jobs) {
      throw new Error(`queued ${pending} jobs, expected ${jobs} (is the database fresh?)`);
    }

    const started = process.hrtime.bigint();
    const runner = await run({
      connectionString,
      concurrency,
      // The pool as large as the concurrency, as graphile-worker advises.
      maxPoolSize: concurrency + 2,
      noHandleSignals: true,
      pollInterval: 1000,
      logger,
      taskList: { noop: async () => {} },
    });
    let failed = 0;
    runner.events.on("job:failed", () => {
      failed += 1;
    });
    // A failed job stays queued (retried later): stop at the first.
    while (failed === 0 && (await count()) > 0) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    await runner.stop();
    if (failed > 0) {
      throw new Error(`${failed} jobs failed`);
    }
    console.log(JSON.stringify({ jobs, concurrency, seconds, jobs_per_sec: jobs / seconds, version }));
  } finally {
    await utils.release();
  }
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
