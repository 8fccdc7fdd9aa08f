// The Supervisor API: a master written in JavaScript instead of the `baton` CLI. It
// starts examples/http/app.mjs on 2 workers, prints every event, reloads on a timer,
// prints each reload's report, and stops gracefully on Ctrl-C (a second Ctrl-C stops
// at once).
//
// Run it (from the repository root):
//
//   node examples/programmatic/master.mjs
//   PORT=9090 RELOAD_EVERY_MS=5000 node examples/programmatic/master.mjs
//   curl http://127.0.0.1:8080/       # the generation grows with every reload
//
// `npx baton status programmatic` works on it too: it serves the same control socket.
import { fileURLToPath } from 'node:url'

import { ReloadError, StartError, Supervisor } from 'batonjs'

const port = Number(process.env.PORT ?? 8080)
const reloadEveryMs = Number(process.env.RELOAD_EVERY_MS ?? 10_000)

const supervisor = new Supervisor({
  name: 'programmatic',
  // We handle SIGINT/SIGTERM ourselves below (the default, `true`, does the same).
  handleSignals: false,
  // Log lines are printed by the event listeners below instead.
  log: false,
  groups: {
    web: {
      script: fileURLToPath(new URL('../http/app.mjs', import.meta.url)),
      count: 2,
      listen: `127.0.0.1:${port}`,
      stopTimeout: 5000,
    },
  },
})

const time = () => new Date().toISOString().slice(11, 23)

// Typed events: every one carries a human `message` and structured fields.
supervisor.on('worker:spawn', (e) =>
  console.log(`${time()} spawn    ${e.group}#${e.id} pid ${e.pid} gen ${e.generation}`),
)
supervisor.on('worker:ready', (e) =>
  console.log(`${time()} ready    ${e.group}#${e.id} pid ${e.pid} gen ${e.generation}`),
)
supervisor.on('worker:exit', (e) =>
  console.log(`${time()} exit     ${e.group}#${e.id} pid ${e.pid}: ${e.reason}${e.expected ? '' : ' (unexpected)'}`),
)
supervisor.on('reload:start', (e) =>
  console.log(`${time()} reload   generation ${e.generation}: ${e.due} workers to replace`),
)
supervisor.on('reload:progress', (e) => console.log(`${time()} progress ${e.group} ${e.replaced}/${e.due}`))
supervisor.on('fleet:stopped', (e) => console.log(`${time()} stopped  ${e.message}`))

function printReport(report) {
  console.log(`${time()} report   ${report.outcome}: ${report.message}`)
  for (const r of report.replaced) console.log(`           ${r.group}#${r.id}: pid ${r.oldPid} -> ${r.newPid}`)
  if (report.failure) {
    console.log(`           failed: ${report.failure.group}#${report.failure.id} ${report.failure.reason}`)
    console.log(report.failure.stderrTail.replace(/^/gm, '           | '))
  }
}

try {
  await supervisor.start()
} catch (e) {
  // StartError: a worker failed before it was ready (its stderr is in the message), the
  // address is in use, or another master of this name runs.
  console.error(e instanceof StartError ? `could not start: ${e.message}` : e)
  process.exit(1)
}
for (const a of supervisor.addresses()) console.log(`${time()} listening on http://${a.bound}/ (group ${a.group})`)

const timer = setInterval(async () => {
  try {
    printReport(await supervisor.reload())
  } catch (e) {
    // A bad deploy: the report says which worker failed and why; the old workers still serve.
    if (e instanceof ReloadError) printReport(e.report)
    else console.error(e)
  }
  const s = supervisor.status()
  console.log(`${time()} status   generation ${s.generation}, pids ${s.workers.map((w) => w.pid).join(', ')}`)
}, reloadEveryMs)

let interrupts = 0
const shutdown = (signal) => {
  clearInterval(timer)
  interrupts += 1
  const force = interrupts > 1
  console.log(`${time()} ${signal}: stopping${force ? ' now (forced)' : ' gracefully (Ctrl-C again to force)'}`)
  supervisor.stop({ force }).catch((e) => console.error(e))
}
process.on('SIGINT', () => shutdown('SIGINT'))
process.on('SIGTERM', () => shutdown('SIGTERM'))

await supervisor.stopped
console.log(`${time()} bye`)
