// Fastify 5 as its docs write it: no baton import. Run with
//   PORT=3000 baton start examples/frameworks/fastify.mjs --count 4
import Fastify from 'fastify'

import { version } from './version.mjs'

const fastify = Fastify()
fastify.get('/', async (request, reply) => {
  reply.header('x-pid', String(process.pid))
  return version
})
await fastify.listen({ port: Number(process.env.PORT ?? 3000), host: process.env.HOST ?? '127.0.0.1' })
