/**
 * KServe Open Inference Protocol v2 (REST) with Triton's binary tensor data and classification
 * extensions. Tensor "data" is only checked to be an array here; its elements are read by hand
 * (../routes/v2/tensors.ts: faster for 150k numbers, and it knows the shape).
 */
import { Type } from 'typebox';
import { coded, errors } from './common.js';

const INFER = 'INVALID_INFER_REQUEST';

const ParamValue = coded(Type.Union([Type.String(), Type.Number(), Type.Boolean()]), INFER, 'a string, number or boolean (KServe $parameter)');
/** $parameters with the ones this server knows typed, and any other string/number/boolean. */
const params = (known: Parameters<typeof Type.Object>[0], description: string) =>
  Type.Optional(coded(Type.Object(known, { additionalProperties: ParamValue, description }), INFER, 'an object of parameters'));

const Shape = Type.Array(coded(Type.Integer({ minimum: 0 }), INFER, 'a non-negative integer'), { description: 'tensor shape' });
const TensorData = coded(
  Type.Unsafe<unknown[]>({ type: 'array', description: 'tensor elements, flat or nested (row-major); base64 strings for a BYTES image input' }),
  INFER,
  'an array',
);

const RequestInput = Type.Object({
  name: coded(Type.String(), INFER, 'a string'),
  shape: coded(Shape, INFER, 'an array of integers'),
  datatype: coded(Type.String(), INFER, 'a string'),
  parameters: params(
    { binary_data_size: Type.Optional(coded(Type.Integer({ minimum: 0 }), INFER, 'a non-negative integer')) },
    'binary_data_size: the tensor is in the binary part of the body, this many bytes',
  ),
  data: Type.Optional(TensorData),
});

const RequestOutput = Type.Object({
  name: coded(Type.String(), INFER, 'a string'),
  parameters: params(
    {
      binary_data: Type.Optional(coded(Type.Boolean(), INFER, 'a boolean')),
      classification: Type.Optional(coded(Type.Integer({ minimum: 1 }), INFER, 'a positive integer')),
    },
    'binary_data: return this output in the binary part; classification: N -> top-N as "value:index:label" BYTES',
  ),
});

export const InferRequest = coded(
  Type.Object({
    id: Type.Optional(coded(Type.String(), INFER, 'a string')),
    parameters: params(
      { binary_data_output: Type.Optional(coded(Type.Boolean(), INFER, 'a boolean')) },
      'binary_data_output: every output in the binary part unless it says otherwise',
    ),
    inputs: coded(Type.Array(RequestInput, { minItems: 1 }), INFER, 'a non-empty array of input tensors'),
    outputs: Type.Optional(coded(Type.Array(RequestOutput), INFER, 'an array of requested outputs')),
  }),
  INFER,
  'a JSON object {"inputs": [...]} (KServe $inference_request)',
);

const ResponseOutput = Type.Object(
  {
    name: Type.String(),
    datatype: Type.String(),
    shape: Type.Array(Type.Integer({ minimum: 0 })),
    parameters: Type.Optional(Type.Object({ binary_data_size: Type.Integer({ minimum: 0 }) }, { additionalProperties: false })),
    data: Type.Optional(Type.Array(Type.Union([Type.Number(), Type.String(), Type.Null()]))),
  },
  { additionalProperties: false },
);

export const InferResponse = Type.Object(
  { model_name: Type.String(), model_version: Type.String(), id: Type.String(), outputs: Type.Array(ResponseOutput) },
  { additionalProperties: false, description: 'JSON; with binary outputs the body is this JSON (Inference-Header-Content-Length bytes) then the tensors' },
);

const MetadataTensor = Type.Object({ name: Type.String(), datatype: Type.String(), shape: Type.Array(Type.Integer()) }, { additionalProperties: false });

export const ModelMetadata = Type.Object(
  {
    name: Type.String(),
    versions: Type.Array(Type.String()),
    platform: Type.String(),
    inputs: Type.Array(MetadataTensor, { description: 'send exactly one of them' }),
    outputs: Type.Array(MetadataTensor),
    parameters: Type.Record(Type.String(), Type.Union([Type.String(), Type.Number(), Type.Boolean()])),
  },
  { additionalProperties: false },
);

const ModelParams = Type.Object({ name: Type.String({ description: 'model name' }) });
const VersionParams = Type.Object({ name: Type.String({ description: 'model name' }), version: Type.String({ description: 'model version ("1")' }) });
const ModelReady = Type.Object({ name: Type.String(), ready: Type.Boolean() }, { additionalProperties: false });
const tags = ['v2'];

export const v2Schemas = {
  server: {
    summary: 'Server metadata',
    tags,
    response: {
      200: Type.Object({ name: Type.String(), version: Type.String(), extensions: Type.Array(Type.String()) }, { additionalProperties: false }),
    },
  },
  live: { summary: 'Server live', tags, response: { 200: Type.Object({ live: Type.Literal(true) }, { additionalProperties: false }) } },
  ready: {
    summary: 'Server ready: 200 when ready, 400 {"ready": false} when not (the spec: a 4xx means false)',
    tags,
    response: {
      200: Type.Object({ ready: Type.Literal(true) }, { additionalProperties: false }),
      400: Type.Object({ ready: Type.Literal(false) }, { additionalProperties: false }),
    },
  },
  modelReady: (versioned: boolean) => ({
    summary: 'Model ready: 200 {name, ready: true}, or 400 {name, ready: false} while loading or draining',
    tags,
    params: versioned ? VersionParams : ModelParams,
    response: { 200: ModelReady, 400: ModelReady, ...errors(404) },
  }),
  metadata: (versioned: boolean) => ({
    summary: 'Model metadata',
    tags,
    params: versioned ? VersionParams : ModelParams,
    response: { 200: ModelMetadata, ...errors(404, 503) },
  }),
  infer: (versioned: boolean) => ({
    summary: 'Inference (JSON, or JSON + binary tensors with Inference-Header-Content-Length)',
    tags,
    params: versioned ? VersionParams : ModelParams,
    headers: Type.Object({
      'inference-header-content-length': Type.Optional(
        coded(Type.String({ pattern: '^\\d+$', description: 'binary tensor data extension: length of the JSON part of the body' }), INFER, 'a byte count'),
      ),
    }),
    body: InferRequest,
    response: {
      200: {
        description: 'the inference response',
        content: {
          'application/json': { schema: InferResponse },
          'application/octet-stream': {
            schema: Type.String({ format: 'binary', description: 'binary outputs: the JSON response (Inference-Header-Content-Length bytes), then each binary output in order' }),
          },
        },
      },
      ...errors(400, 401, 404, 413, 415, 500, 503),
    },
  }),
};
