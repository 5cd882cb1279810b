/** GET / (service info, or the try-it page for browsers), liveness, readiness, metrics, OpenAPI. */
import { Type } from 'typebox';
import { ErrorBody, LifecycleState } from './common.js';

const Int = (description?: string) => Type.Integer({ minimum: 0, ...(description ? { description } : {}) });
const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);

const ModelInfo = Type.Object(
  {
    name: Type.String(),
    variant: Type.String(),
    weights: Type.String({ description: 'where the weights come from; "random-init (not trained)" when not trained' }),
    random_init: Type.Boolean(),
    warning: Type.Optional(Type.String()),
    num_classes: Int(),
    input_shape: Type.Array(Int(), { description: 'C, H, W' }),
    device: Type.String({ description: 'cpu, cuda, cuda:N' }),
    precision: Type.String(),
    libtorch_version: Type.String(),
    instances: Int('model instances (forwards at once)'),
    threads_per_instance: Int(),
    optimizations: Type.Array(Type.String()),
  },
  { additionalProperties: false },
);

export const InfoResponse = Type.Object(
  {
    service: Type.Literal('densenet-serve'),
    version: Type.String(),
    state: LifecycleState,
    model: Nullable(ModelInfo),
    batching: Type.Object(
      {
        max_batch: Int(),
        batch_window_ms: Type.Number({ minimum: 0 }),
        queue_limit: Int(),
        batch_sizes: Nullable(Type.Array(Int())),
        request_timeout_ms: Int(),
      },
      { additionalProperties: false },
    ),
    instances: Nullable(
      Type.Array(Type.Object({ instance: Int(), batches: Int(), images: Int(), busy_seconds: Type.Number({ minimum: 0 }) }, { additionalProperties: false })),
    ),
    preprocessing: Type.Object({ workers: Int(), decodes_during_forward: Nullable(Int()) }, { additionalProperties: false }),
    limits: Type.Object(
      { body_limit_bytes: Int(), max_pixels: Int(), max_files: Int(), image_formats: Type.Array(Type.String(), { description: 'IMAGE_FORMATS' }) },
      { additionalProperties: false },
    ),
    auth: Type.String({ description: '"none", or says that a bearer token is required' }),
    endpoints: Type.Record(Type.String(), Type.Union([Type.String(), Type.Array(Type.String())])),
  },
  { additionalProperties: false },
);

export const infoSchema = {
  summary: 'Service info (JSON), or the try-it page when the client asks for text/html',
  tags: ['info'],
  response: {
    200: {
      description: 'model, weights, device, batching, limits, auth, endpoints; a browser gets an HTML page',
      content: {
        'application/json': { schema: InfoResponse },
        'text/html': { schema: Type.String({ description: 'the try-it page (self-contained)' }) },
      },
    },
  },
};

const Live = Type.Object({ status: Type.Literal('ok'), state: LifecycleState }, { additionalProperties: false });
export const liveSchema = { summary: 'Liveness: 200 while the process serves HTTP', tags: ['health'], response: { 200: Live } };

export const readySchema = {
  summary: 'Readiness: 200 once the model is loaded and warmed up',
  tags: ['health'],
  response: {
    200: Type.Object({ status: Type.Literal('ready') }, { additionalProperties: false }),
    503: Type.Object({ ...ErrorBody.properties, status: LifecycleState }, { additionalProperties: false, description: 'loading, warming up or draining' }),
  },
};

export const metricsSchema = {
  summary: 'Prometheus metrics (text format)',
  tags: ['health'],
  response: { 200: { description: 'Prometheus text exposition format', content: { 'text/plain': { schema: Type.String() } } } },
};
