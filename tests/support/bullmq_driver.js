// The original notification worker's use of BullMQ, for tests: run by tests/support/bullmq.py
// with NODE_PATH pointing at an npm install of bullmq and ioredis.
//
//   node bullmq_driver.js seed   < {"url", "queue", "jobs": [{"id", "data", "scenario"}]}
//   node bullmq_driver.js hold   < {"url", "queue", "job": {...}, "lockMs"}   (prints "active";
//                                  run it when nothing else waits, or the worker takes that)
//   node bullmq_driver.js run    < {"url", "queue"}            (a worker until killed)
//   node bullmq_driver.js drain  < {"url", "queue", "ms"}      → ids an old worker processes
//   node bullmq_driver.js states < {"url", "queue", "ids"}     → BullMQ's getJobState per id
//
// Jobs are added as the original worker did: BullMQ job id = database job id, priority 1 for
// urgent and 10 otherwise, 3 attempts with exponential backoff. Scenarios:
//   deliver     processed: returns {success: true, messageId, deliveryMethod, deliveredAt}
//   reject      processed: returns {success: false, error, deliveryMethod}
//   crash       throws on every attempt (backoff 10 ms): failed, attempts exhausted
//   retry_later throws once, next attempt in an hour: delayed
//   prioritized added after the worker stopped: prioritized
//   waiting     added after the worker stopped, without a priority: wait
//   scheduled   added after the worker stopped with a delay: delayed
'use strict';

const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');

const PROCESSED = ['deliver', 'reject', 'crash', 'retry_later'];
const TARGET_STATE = { deliver: 'completed', reject: 'completed', crash: 'failed', retry_later: 'delayed' };

function connect(url) {
  return new IORedis(url, { maxRetriesPerRequest: null });
}

function jobOptions(job) {
  const urgent = job.data && job.data.urgencyLevel === 'urgent';
  const options = {
    jobId: job.id,
    priority: urgent ? 1 : 10,
    attempts: 3,
    backoff: { type: 'exponential', delay: job.scenario === 'retry_later' ? 3600000 : 10 },
  };
  if (job.scenario === 'waiting') delete options.priority;
  if (job.scenario === 'scheduled') options.delay = 3600000;
  return options;
}

async function processor(job) {
  const scenario = job.data.scenario;
  if (scenario === 'crash' || scenario === 'retry_later') {
    throw new Error(`SendGrid API error: 503 Service Unavailable (${job.id})`);
  }
  if (scenario === 'reject') {
    return { success: false, error: 'The from address does not match a verified Sender Identity', deliveryMethod: job.data.deliveryMethod };
  }
  return {
    success: true,
    messageId: `bullmq-msg-${job.id}`,
    deliveryMethod: job.data.deliveryMethod,
    deliveredAt: '2026-11-20T10:00:00.000Z',
  };
}

async function seed(input) {
  const connection = connect(input.url);
  const queue = new Queue(input.queue, { connection });
  const processed = input.jobs.filter((j) => PROCESSED.includes(j.scenario));
  for (const job of processed) {
    await queue.add('notification', { ...job.data, scenario: job.scenario }, jobOptions(job));
  }
  if (processed.length) {
    const worker = new Worker(input.queue, processor, { connection: connect(input.url), name: 'notification-worker' });
    const deadline = Date.now() + 30000;
    for (;;) {
      const states = await Promise.all(processed.map((j) => queue.getJobState(j.id)));
      if (states.every((state, i) => state === TARGET_STATE[processed[i].scenario])) break;
      if (Date.now() > deadline) throw new Error(`jobs did not settle: ${JSON.stringify(states)}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await worker.close();
  }
  for (const job of input.jobs.filter((j) => !PROCESSED.includes(j.scenario))) {
    await queue.add('notification', { ...job.data, scenario: job.scenario }, jobOptions(job));
  }
  const states = {};
  for (const job of input.jobs) states[job.id] = await queue.getJobState(job.id);
  await queue.close();
  connection.disconnect();
  return states;
}

async function hold(input) {
  // A worker that takes the job and never finishes; the test kills this process, leaving the
  // job active with a lock that expires after lockMs, as an old worker killed mid-send does.
  const connection = connect(input.url);
  const queue = new Queue(input.queue, { connection });
  await queue.add('notification', input.job.data, jobOptions(input.job));
  // eslint-disable-next-line no-new
  new Worker(input.queue, async () => {
    process.stdout.write('active\n');
    await new Promise(() => {});
  }, { connection: connect(input.url), lockDuration: input.lockMs, name: 'notification-worker' });
  await new Promise(() => {});
}

async function run(input) {
  // The old worker left running (until the test kills this process).
  new Worker(input.queue, processor, { connection: connect(input.url), name: 'notification-worker' });
  await new Promise(() => {});
}

async function drain(input) {
  // The old worker started again: which jobs does it still process?
  const seen = [];
  const worker = new Worker(input.queue, async (job) => {
    seen.push(job.id);
    return processor(job);
  }, { connection: connect(input.url), name: 'notification-worker' });
  await new Promise((resolve) => setTimeout(resolve, input.ms));
  await worker.close();
  return seen;
}

async function states(input) {
  const connection = connect(input.url);
  const queue = new Queue(input.queue, { connection });
  const result = {};
  for (const id of input.ids) result[id] = await queue.getJobState(id);
  await queue.close();
  connection.disconnect();
  return result;
}

const COMMANDS = { seed, hold, run, drain, states };

(async () => {
  const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
  const result = await COMMANDS[process.argv[2]](input);
  process.stdout.write(JSON.stringify(result));
  process.exit(0);
})().catch((error) => {
  process.stderr.write(String((error && error.stack) || error));
  process.exit(1);
});
