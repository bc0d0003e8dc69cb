// The peer for `cargo xtask bench`: a broadcast relay on Node's `ws`, written as the Angular +
// WebSockets tutorial's server is: every text frame a client sends goes to every other client,
// nothing else (no history, no limits). `ws` defaults throughout (no compression).
//
// Usage: node relay.js --listen 127.0.0.1:5000
'use strict';

const { WebSocketServer, WebSocket } = require('ws');

function listenAddress(args) {
  const at = args.indexOf('--listen');
  const value = at >= 0 ? args[at + 1] : undefined;
  const match = /^(.+):(\d+)$/.exec(value || '');
  if (!match) {
    console.error('usage: node relay.js --listen HOST:PORT');
    process.exit(2);
  }
  return { host: match[1], port: Number(match[2]) };
}

const { host, port } = listenAddress(process.argv.slice(2));
const server = new WebSocketServer({ host, port });

server.on('connection', (socket) => {
  socket.on('message', (data, isBinary) => {
    if (isBinary) {
      return;
    }
    for (const client of server.clients) {
      if (client !== socket && client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: false });
      }
    }
  });
  // A client that vanishes must not take the relay down.
  socket.on('error', () => {});
});

server.on('listening', () => {
  console.error(`node ws relay listening on ${host}:${port}`);
});
server.on('error', (error) => {
  console.error(`node ws relay: ${error.message}`);
  process.exit(1);
});
