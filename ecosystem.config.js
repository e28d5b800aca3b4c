// notifier under PM2:  pm2 start ecosystem.config.js   (then: pm2 status, pm2 logs, pm2 save)
//
// Settings come from the environment `pm2 start` runs in (DATABASE_URL, REDIS_URL,
// SENDGRID_API_KEY, ...); after changing them: pm2 restart ecosystem.config.js --update-env.
// NOTIFIER_BIN: the directory holding the `notifier` and `rq` commands (a virtualenv's bin);
// unset, they are looked up on PATH.
//
// Stopping: PM2 sends SIGINT, then SIGKILL after kill_timeout. Every notifier process stops
// gracefully on SIGINT or SIGTERM: the poller finishes its claim, a worker finishes the RQ
// job in hand (up to NOTIFIER_RQ_JOB_SIZE sends), the web process its requests in flight.
// The worker's kill_timeout must exceed one RQ job's time limit, so a warm stop is never cut
// short: ceil(NOTIFIER_RQ_JOB_SIZE / NOTIFIER_SEND_CONCURRENCY) x (2 x NOTIFIER_PROVIDER_TIMEOUT
// + 5) + 60 s = 160 s with the defaults; raise it with those settings. A worker killed anyway
// loses nothing: its jobs come back when their lease expires (the ones in hand with an
// unknown outcome, see docs/operations.md).
const fs = require("fs");
const path = require("path");

// The full path of a command: PM2 would otherwise resolve `notifier` against its working
// directory first (in a checkout, the notifier/ package directory).
function bin(name) {
  const dirs = process.env.NOTIFIER_BIN
    ? [process.env.NOTIFIER_BIN]
    : (process.env.PATH || "").split(path.delimiter);
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch (_missing) {
      // not in this directory
    }
  }
  throw new Error(`${name} not found in ${dirs.join(path.delimiter)}: set NOTIFIER_BIN`);
}

const common = {
  interpreter: "none", // a console script, not a Node.js file
  exec_mode: "fork",
  // Restart on every exit, status 0 included (no stop_exit_codes): a worker quits on a Redis
  // outage longer than it rides out (~30 s), sometimes with status 0.
  autorestart: true,
  min_uptime: "10s", // a process that dies sooner counts as a failed start...
  max_restarts: 20, // ...and PM2 gives up after this many in a row
  exp_backoff_restart_delay: 200, // 200 ms, doubling, between restarts after a crash
  merge_logs: true,
  env: { LOG_FORMAT: process.env.LOG_FORMAT || "json" },
};

module.exports = {
  apps: [
    {
      ...common,
      name: "notifier-poller",
      script: bin("notifier"),
      args: "poller",
      instances: 1, // more are safe (claims use SKIP LOCKED); one is enough for most loads
      kill_timeout: 15000,
    },
    {
      ...common,
      name: "notifier-worker",
      script: bin("rq"),
      args: "worker -c notifier.rq_settings -w rq.worker.SimpleWorker",
      instances: 2,
      kill_timeout: 180000,
    },
    {
      ...common,
      name: "notifier-scheduler",
      script: bin("notifier"),
      args: "scheduler",
      instances: 1,
      kill_timeout: 15000,
    },
    {
      ...common,
      name: "notifier-web",
      script: bin("notifier"),
      args: "web",
      instances: 1,
      kill_timeout: 10000,
      env: { ...common.env, PORT: process.env.PORT || "8000" },
    },
  ],
};
