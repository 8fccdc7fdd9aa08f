// A @grpc/grpc-js server as its docs write it: no baton import. Run with
//   PORT=50051 baton start examples/frameworks/grpc.mjs --count 4
import grpc from '@grpc/grpc-js'

import { versionService } from './grpc-service.mjs'
import { version } from './version.mjs'

const server = new grpc.Server()
server.addService(versionService, {
  get: (call, callback) => callback(null, { version, pid: process.pid }),
})
server.bindAsync(`127.0.0.1:${process.env.PORT ?? 50051}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) throw err
})
