/**
 * KServe v2 binary tensor data, built the way tritonclient (Python, HTTP) builds it, since
 * tritonclient itself cannot be installed here:
 * - the JSON part is rapidjson's compact dump: keys in tritonclient's order ("id", "inputs" with
 *   name/shape/datatype/parameters, "outputs" with name/parameters, "parameters"), no spaces;
 * - the binary part is each input's raw little-endian bytes, in input order; a BYTES element is a
 *   uint32 LE length followed by its bytes (serialize_byte_tensor);
 * - headers: Inference-Header-Content-Length = the JSON length, no Content-Type (geventhttpclient
 *   sets none); without outputs, parameters.binary_data_output = true (tritonclient's default).
 * The response is split the way tritonclient's InferResult does.
 */
import net from 'node:net';

export interface TritonInput {
  name: string;
  shape: number[];
  datatype: 'FP32' | 'BYTES';
  /** The raw tensor bytes (see fp32Bytes / bytesTensor). */
  raw: Buffer;
}

export interface TritonOutput {
  name: string;
  binary?: boolean;
  classCount?: number;
}

export const fp32Bytes = (values: ArrayLike<number>): Buffer => Buffer.from(Float32Array.from(values).buffer);

export function bytesTensor(elements: readonly Buffer[]): Buffer {
  return Buffer.concat(elements.flatMap((e) => [Buffer.from(Uint32Array.of(e.length).buffer), e]));
}

/** tritonclient.http._utils._get_inference_request with binary inputs. */
export function tritonRequest(inputs: readonly TritonInput[], outputs?: readonly TritonOutput[], id = ''): { body: Buffer; jsonSize: number } {
  const req: Record<string, unknown> = {};
  if (id !== '') req.id = id;
  req.inputs = inputs.map((i) => ({ name: i.name, shape: i.shape, datatype: i.datatype, parameters: { binary_data_size: i.raw.length } }));
  if (outputs && outputs.length > 0) {
    req.outputs = outputs.map((o) => {
      const parameters: Record<string, unknown> = {};
      if (o.classCount) parameters.classification = o.classCount;
      parameters.binary_data = o.binary ?? true;
      return { name: o.name, parameters };
    });
  } else {
    req.parameters = { binary_data_output: true };
  }
  const json = Buffer.from(JSON.stringify(req));
  return { body: Buffer.concat([json, ...inputs.map((i) => i.raw)]), jsonSize: json.length };
}

export interface ParsedOutput {
  name: string;
  datatype: string;
  shape: number[];
  /** FP32 values or BYTES strings, from the binary part or from "data". */
  values: number[] | string[];
}

function decodeBytes(buf: Buffer): string[] {
  const out: string[] = [];
  for (let at = 0; at < buf.length; ) {
    const len = buf.readUInt32LE(at);
    out.push(buf.toString('utf8', at + 4, at + 4 + len));
    at += 4 + len;
  }
  return out;
}

/** tritonclient's InferResult: JSON header (Inference-Header-Content-Length bytes), then the binary outputs. */
export function parseTritonResponse(headerLength: string | undefined, body: Buffer): { json: Record<string, unknown>; outputs: Map<string, ParsedOutput> } {
  const n = headerLength === undefined ? body.length : Number(headerLength);
  const json = JSON.parse(body.toString('utf8', 0, n)) as { outputs: { name: string; datatype: string; shape: number[]; parameters?: { binary_data_size?: number }; data?: unknown[] }[] };
  const outputs = new Map<string, ParsedOutput>();
  let at = n;
  for (const o of json.outputs) {
    const size = o.parameters?.binary_data_size;
    let values: number[] | string[];
    if (size !== undefined) {
      const part = body.subarray(at, at + size);
      at += size;
      values = o.datatype === 'BYTES' ? decodeBytes(part) : Array.from(new Float32Array(part.buffer.slice(part.byteOffset, part.byteOffset + part.length)));
    } else {
      values = o.data as number[] | string[];
    }
    outputs.set(o.name, { name: o.name, datatype: o.datatype, shape: o.shape, values });
  }
  return { json, outputs };
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** Sends exactly these bytes over a fresh socket and reads the response (the request says Connection: close). */
export function rawHttp(url: string, request: Buffer): Promise<RawResponse> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const sock = net.connect(Number(port), hostname, () => sock.write(request));
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', reject);
    sock.on('end', () => {
      const all = Buffer.concat(chunks);
      const split = all.indexOf('\r\n\r\n');
      const head = all.toString('latin1', 0, split).split('\r\n');
      const status = Number(head[0]!.split(' ')[1]);
      const headers: Record<string, string> = {};
      for (const line of head.slice(1)) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      const rest = all.subarray(split + 4);
      const len = headers['content-length'];
      resolve({ status, headers, body: len === undefined ? rest : rest.subarray(0, Number(len)) });
    });
  });
}

/** The request bytes geventhttpclient puts on the wire for tritonclient's infer(). */
export function tritonHttpBytes(host: string, path: string, body: Buffer, jsonSize: number): Buffer {
  const head =
    `POST ${path} HTTP/1.1\r\n` +
    `Host: ${host}\r\n` +
    'User-Agent: python/gevent-http-client-2.3.1\r\n' +
    `Inference-Header-Content-Length: ${jsonSize}\r\n` +
    `Content-Length: ${body.length}\r\n` +
    'Connection: close\r\n\r\n';
  return Buffer.concat([Buffer.from(head, 'latin1'), body]);
}
