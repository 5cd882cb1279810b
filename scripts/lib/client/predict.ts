/**
 * Builds POST /predict requests in the three documented body formats and checks each answer
 * against the schema. Nothing here prints: the caller decides between a table and JSON.
 */
import { randomBytes } from 'node:crypto';
import { ClientError, parseJson, statusError, type HttpClient, type RequestSpec } from './http.js';
import type { ClientImage } from './images.js';
import type { SendFormat } from './args.js';
import {
  SchemaError,
  isErrorShape,
  validateMultiResponse,
  validatePredictResponse,
  type ErrorResponse,
  type Prediction,
  type PredictResponse,
} from './schema.js';

export function multipartBody(images: readonly ClientImage[], fields: Record<string, string>): { body: Buffer; contentType: string } {
  const boundary = `----densenet-client-${randomBytes(12).toString('hex')}`;
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(fields)) {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`));
  }
  for (const img of images) {
    const safe = img.name.replace(/["\r\n]/g, '_');
    parts.push(
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${safe}"\r\nContent-Type: ${img.mime}\r\n\r\n`),
      img.data,
      Buffer.from('\r\n'),
    );
  }
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` };
}

export function predictRequest(images: readonly ClientImage[], format: SendFormat, topk: number): RequestSpec {
  if (format === 'multipart') {
    const { body, contentType } = multipartBody(images, { topk: String(topk) });
    return { method: 'POST', path: '/predict', body, contentType, auth: true };
  }
  if (format === 'json') {
    const payload =
      images.length === 1
        ? { image: images[0]!.data.toString('base64'), topk }
        : { images: images.map((i) => i.data.toString('base64')), topk };
    return { method: 'POST', path: '/predict', body: Buffer.from(JSON.stringify(payload)), contentType: 'application/json', auth: true };
  }
  if (images.length !== 1) throw new Error('a raw image body holds exactly one image');
  // topk travels in the query string for a raw body (there is no other place for it).
  return { method: 'POST', path: `/predict?topk=${topk}`, body: images[0]!.data, contentType: images[0]!.mime, auth: true };
}

export interface ImageResult {
  image: string;
  /** Client-measured round trip of the request that carried this image. */
  client_ms: number;
  response?: PredictResponse;
  error?: ErrorResponse;
}

/** Sends the images (one request, or one each) and returns one validated result per image. */
export async function predict(
  client: HttpClient,
  images: readonly ClientImage[],
  opts: { format: SendFormat; topk: number; together: boolean },
): Promise<ImageResult[]> {
  const groups = opts.together ? [images] : images.map((i) => [i]);
  const out: ImageResult[] = [];
  for (const group of groups) {
    const spec = predictRequest(group, opts.format, opts.topk);
    const what = client.describe(spec);
    const res = await client.request(spec);
    if (res.status < 200 || res.status > 299) {
      throw statusError(res, what, !!client.opts.token, !!client.opts.host);
    }
    const body = parseJson(res, what);
    try {
      if (group.length === 1) {
        out.push({ image: group[0]!.name, client_ms: res.ms, response: validatePredictResponse(body, { topk: opts.topk, batchSize: 1 }) });
      } else {
        const multi = validateMultiResponse(body, group.length, { topk: opts.topk });
        multi.results.forEach((r, i) => {
          const image = group[i]!.name;
          out.push(
            isErrorShape(r)
              ? { image, client_ms: res.ms, error: r as ErrorResponse }
              : {
                  image,
                  client_ms: res.ms,
                  // Shown like a single answer: the request's latency and variant; batch_size is the request's.
                  response: { predictions: (r as { predictions: Prediction[] }).predictions, latency_ms: multi.latency_ms, model_variant: multi.model_variant, batch_size: multi.batch_size },
                },
          );
        });
      }
    } catch (err) {
      if (err instanceof SchemaError) throw new ClientError(`invalid response from ${what}: ${err.message}`, res.status, 'INVALID_RESPONSE');
      throw err;
    }
  }
  return out;
}
