// The demo gRPC service, shared by the server (grpc.mjs) and its clients: one unary
// method, `/demo.Version/Get`, with JSON-encoded messages (so no .proto file is needed).
export const versionService = {
  get: {
    path: '/demo.Version/Get',
    requestStream: false,
    responseStream: false,
    requestSerialize: (value) => Buffer.from(JSON.stringify(value)),
    requestDeserialize: (bytes) => JSON.parse(bytes.toString()),
    responseSerialize: (value) => Buffer.from(JSON.stringify(value)),
    responseDeserialize: (bytes) => JSON.parse(bytes.toString()),
  },
}
