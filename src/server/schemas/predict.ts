/**
 * POST /predict: the JSON body envelope and query (the base64 itself is decoded by hand in
 * ../input.ts: faster, and its errors are more precise), the other body formats (documented
 * only: multipart and raw bodies are read by ../input.ts), and the two response shapes.
 */
import { Type, type Static } from 'typebox';
import { coded, ErrorBody, errors } from './common.js';

const DIGITS = '^\\s*\\d+\\s*$';

const Topk = coded(
  Type.Union([Type.Integer({ minimum: 1, maximum: 1000 }), Type.String({ pattern: DIGITS }), Type.Null()], {
    description: 'how many classes to return, most likely first (default 5)',
  }),
  'INVALID_TOPK',
  'an integer in 1..1000',
);
const BatchSize = coded(
  Type.Union([Type.Integer({ minimum: 1 }), Type.String({ pattern: DIGITS }), Type.Null()], {
    description: 'throughput probe: run the single image N times as one batch (1..MAX_BATCH)',
  }),
  'INVALID_BATCH_SIZE',
  'an integer in 1..MAX_BATCH',
);
const Base64 = coded(Type.String({ description: 'base64 (standard or URL-safe) image bytes, or a data: URL' }), 'INVALID_BASE64', 'a base64 string');

export const PredictJsonBody = coded(
  Type.Object(
    {
      image: Type.Optional(Base64),
      images: Type.Optional(coded(Type.Array(Base64, { minItems: 1, description: 'several images: one result each' }), 'INVALID_REQUEST', 'a non-empty array of base64 strings')),
      topk: Type.Optional(Topk),
      batch_size: Type.Optional(BatchSize),
    },
    { description: 'one of "image" or "images"' },
  ),
  'INVALID_REQUEST',
  'a JSON object: {"image": "<base64>"} or {"images": ["<base64>", ...]}',
);

export const PredictQuery = Type.Object({
  topk: Type.Optional(coded(Type.String({ pattern: '^\\s*\\d*\\s*$', description: 'how many classes to return (default 5)' }), 'INVALID_TOPK', 'an integer in 1..1000')),
  batch_size: Type.Optional(coded(Type.String({ pattern: DIGITS, description: 'raw bodies: run the image N times as one batch' }), 'INVALID_BATCH_SIZE', 'an integer in 1..MAX_BATCH')),
});

/** Documented, not validated by Fastify (multipart is streamed, raw bodies are bytes). */
export const predictOtherBodies = {
  'multipart/form-data': {
    schema: Type.Object(
      {
        file: Type.String({ format: 'binary', description: 'an image file; any field name, several files allowed (one result each)' }),
        topk: Type.Optional(Type.String({ description: 'how many classes to return (default 5)' })),
        batch_size: Type.Optional(Type.String({ description: 'one file only: run it N times as one batch' })),
      },
      { additionalProperties: true },
    ),
  },
  'image/*': { schema: Type.String({ format: 'binary', description: 'the image bytes (JPEG, PNG, WebP, GIF, TIFF, AVIF)' }) },
  'application/octet-stream': { schema: Type.String({ format: 'binary', description: 'the image bytes' }) },
};

export const Prediction = Type.Object(
  {
    class_id: Type.Integer({ minimum: 0, description: 'class index (ImageNet: 0..999)' }),
    class_name: Type.String({ minLength: 1, description: 'label from the model card' }),
    confidence: Type.Number({ minimum: 0, maximum: 1, description: 'softmax probability, 4 decimals' }),
  },
  { additionalProperties: false },
);
export const Predictions = Type.Array(Prediction, { minItems: 1, description: 'top-k, most likely first' });
const Latency = Type.Number({ minimum: 0, description: 'server-side time for the request, ms' });
const Variant = Type.String({ minLength: 1, description: 'which model answered, e.g. densenet121_imagenet1k_v1' });

export const PredictResponse = Type.Object(
  { predictions: Predictions, latency_ms: Latency, model_variant: Variant, batch_size: Type.Integer({ minimum: 1 }) },
  { additionalProperties: false, description: 'one image' },
);

export const MultiPredictResponse = Type.Object(
  {
    results: Type.Array(Type.Union([Type.Object({ predictions: Predictions }, { additionalProperties: false }), ErrorBody]), {
      description: 'one entry per image, in order; an image that failed gets an error entry',
    }),
    latency_ms: Latency,
    model_variant: Variant,
    batch_size: Type.Integer({ minimum: 0, description: 'images that reached the model' }),
  },
  { additionalProperties: false, description: 'several images' },
);

export type PredictionT = Static<typeof Prediction>;
export type PredictResponseT = Static<typeof PredictResponse>;
export type MultiPredictResponseT = Static<typeof MultiPredictResponse>;
export type ErrorBodyT = Static<typeof ErrorBody>;

export const predictSchema = {
  summary: 'Classify one or several images',
  tags: ['predict'],
  querystring: PredictQuery,
  body: { content: { 'application/json': { schema: PredictJsonBody } } },
  response: {
    200: Type.Union([PredictResponse, MultiPredictResponse]),
    ...errors(400, 401, 413, 415, 500, 503),
  },
};

/** Route options for POST /predict: the schema, and the other body formats added to the OpenAPI document only. */
export function predictRoute(auth: boolean) {
  const schema = { ...predictSchema, ...(auth ? { security: [{ bearer: [] }] } : {}) };
  const docBody = { content: { ...predictSchema.body.content, ...predictOtherBodies } };
  return {
    schema,
    // The handler throws the validation error itself, after readiness, so that it is counted.
    attachValidation: true,
    config: { swaggerTransform: ({ url }: { url: string }) => ({ url, schema: { ...schema, body: docBody } }) },
  };
}
