// A small TCP proxy between the SDK and the real server, for the tests of what happens on the way: it records
// every request and answer, and per request can pass it through, drop the connection after the server answered
// (so the server applied it but the client never learns), hold the answer past the client's timeout, or answer
// itself without asking the server (a 503 or a 409 in flight). The server is always the real one.
import net from "node:net";

export type Fault =
  | "pass"
  | "drop-after-server-answered"
  | "hold-answer"
  | { status: number; headers?: Record<string, string>; body: unknown };

export interface Exchange {
  request: string;
  response: string;
  at: number;
}

export class FaultProxy {
  readonly exchanges: Exchange[] = [];
  #server = net.createServer((socket) => this.#accept(socket));
  #sockets = new Set<net.Socket>();
  #requests = 0;

  /** `plan(n)` is the fault for the n-th request (0-based) through the proxy. */
  constructor(
    readonly target: URL,
    readonly plan: (n: number) => Fault,
  ) {}

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    const address = this.#server.address() as net.AddressInfo;
    return `http://127.0.0.1:${address.port}`;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** The value of `name` in each recorded request, in order. */
  requestHeader(name: string): (string | undefined)[] {
    return this.exchanges.map((e) => header(e.request, name));
  }

  #track(s: net.Socket): net.Socket {
    this.#sockets.add(s);
    s.on("close", () => this.#sockets.delete(s));
    s.on("error", () => s.destroy());
    return s;
  }

  // One client connection may carry several requests (keep-alive); each is read whole, then handled by its fault
  // over a fresh connection to the server, so a fault never leaks into the next request.
  #accept(client: net.Socket): void {
    this.#track(client);
    let buffered = Buffer.alloc(0);
    let busy = false;
    const next = (): void => {
      if (busy) return;
      const end = requestEnd(buffered);
      if (end === undefined) return;
      const request = buffered.subarray(0, end);
      buffered = buffered.subarray(end);
      busy = true;
      void this.#handle(client, request).then(() => {
        busy = false;
        next();
      });
    };
    client.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      next();
    });
  }

  async #handle(client: net.Socket, request: Buffer): Promise<void> {
    const fault = this.plan(this.#requests++);
    const exchange: Exchange = { request: request.toString("utf8"), response: "", at: Date.now() };
    this.exchanges.push(exchange);
    if (typeof fault === "object") {
      const body = JSON.stringify(fault.body);
      const lines = [`HTTP/1.1 ${fault.status} Injected`, "Content-Type: application/json",
        `Content-Length: ${Buffer.byteLength(body)}`, "Connection: close"];
      for (const [k, v] of Object.entries(fault.headers ?? {})) lines.push(`${k}: ${v}`);
      exchange.response = lines.join("\r\n") + "\r\n\r\n" + body;
      client.end(exchange.response);
      return;
    }
    const answer = await this.#forward(request);
    exchange.response = answer.toString("utf8");
    if (fault === "pass") client.write(answer);
    else if (fault === "drop-after-server-answered") client.destroy();
    // "hold-answer": the server answered; the client hears nothing until it gives up and closes.
  }

  // Sends one request to the server over its own connection and returns the whole answer.
  #forward(request: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const upstream = this.#track(net.connect(Number(this.target.port), this.target.hostname));
      let answer = Buffer.alloc(0);
      upstream.on("connect", () => upstream.write(request));
      upstream.on("data", (chunk: Buffer) => {
        answer = Buffer.concat([answer, chunk]);
        if (responseEnd(answer) !== undefined) {
          upstream.destroy();
          resolve(answer);
        }
      });
      upstream.on("error", reject);
    });
  }
}

/** A header's value in a raw HTTP message, case-insensitively. */
export function header(message: string, name: string): string | undefined {
  const head = message.split("\r\n\r\n", 1)[0] ?? "";
  for (const line of head.split("\r\n").slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === name.toLowerCase()) {
      return line.slice(colon + 1).trim();
    }
  }
  return undefined;
}

/** The status code of a raw HTTP response. */
export function status(message: string): number {
  return Number(message.split(" ", 2)[1]);
}

// Where a message with a Content-Length body (or none) ends in `data`, or undefined if not all of it is there.
// Our server and the SDK never use chunked encoding for these small JSON bodies.
function messageEnd(data: Buffer): number | undefined {
  const headEnd = data.indexOf("\r\n\r\n");
  if (headEnd < 0) return undefined;
  const length = Number(header(data.subarray(0, headEnd + 4).toString("latin1"), "content-length") ?? 0);
  const end = headEnd + 4 + length;
  return data.length >= end ? end : undefined;
}

const requestEnd = messageEnd;
const responseEnd = messageEnd;
