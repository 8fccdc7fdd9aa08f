/**
 * A stand-in for systemd's notify socket: a real Unix datagram socket (Node has none, so a
 * few lines of Python hold it) and the notifications it received.
 */
import type { ExecutionContext } from 'ava'
import { join } from 'node:path'
import { OutputBuffer, ProcessTracker, tmpDir, type TmpDir } from './processes.js'

/** Binds a datagram socket at argv[1], prints "bound", then one JSON string per datagram. */
const LISTENER = `
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("bound", flush=True)
while True:
    print(json.dumps(s.recv(65536).decode()), flush=True)
`

/** The notifications received so far, each parsed into its `KEY=value` assignments. */
export function notifications(out: OutputBuffer): Array<Record<string, string>> {
  return out.text
    .split('\n')
    .filter((l) => l.startsWith('"'))
    .map((l) => JSON.parse(l) as string)
    .map((d) =>
      Object.fromEntries(d.split('\n').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
    )
}

/** A notify listener in its own temp dir, bound and ready; stopped and removed after the test. */
export async function startNotifyListener(
  t: ExecutionContext,
): Promise<{ dir: TmpDir; socketPath: string; out: OutputBuffer }> {
  const tracker = new ProcessTracker()
  t.teardown(() => tracker.killAll())
  const dir = await tmpDir('baton-notify-')
  t.teardown(() => dir.cleanup())
  const socketPath = join(dir.path, 'notify.sock')
  const listener = tracker.spawn('python3', ['-c', LISTENER, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] })
  const out = new OutputBuffer().follow(listener.stdout)
  await out.waitFor(/^bound$/m)
  return { dir, socketPath, out }
}
