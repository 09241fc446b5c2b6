/** The baseline: a raw Bun.serve hello world answering a small JSON body. */
const body = JSON.stringify({ success: true, data: { hello: 'world' } })
const server = Bun.serve({
  hostname: '127.0.0.1',
  port: Number(process.env.PORT ?? 0),
  fetch: () => new Response(body, { headers: { 'content-type': 'application/json' } }),
})
console.log(`listening ${server.port}`)
