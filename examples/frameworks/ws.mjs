// A `ws` WebSocket server as its docs write it: no baton import. Run with
//   PORT=8080 baton start examples/frameworks/ws.mjs --count 4
// On a reload each client gets close code 1012 (service restart) and reconnects, to a
// new worker.
import { WebSocketServer } from 'ws'

import { version } from './version.mjs'

const wss = new WebSocketServer({ port: Number(process.env.PORT ?? 8080) })
wss.on('connection', (socket) => socket.send(version))
