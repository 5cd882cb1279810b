/**
 * The model card: the JSON written next to an exported model (models/x.pt -> models/x.json).
 * It says what the weights are (so nobody mistakes random-init answers for real ones), how to
 * preprocess for the model, the class names, and the sha256 of the .pt it describes.
 */
import { readFile } from 'node:fs/promises';
import { AppError } from './errors.js';
import { isPositiveInt } from './validate.js';

export const RANDOM_INIT_WEIGHTS = 'random-init (not trained)';

export interface ModelCard {
  name: string;
  variant: string;
  /** "random-init (not trained)" | "imagenet1k_v1" | "file:<name>" */
  weights: string;
  sha256: string;
  input_shape: [number, number, number];
  resize: number;
  crop: number;
  mean: [number, number, number];
  std: [number, number, number];
  labels: string[];
  torch_version: string;
  torchvision_version: string;
  exported_at: string;
  seed?: number;
  format: 'torchscript';
  /** sha256 of the checkpoint a "file:" export was made from (lets the exporter detect a changed file). */
  weights_file_sha256?: string;
}

export function cardPathFor(modelPath: string): string {
  return modelPath.replace(/\.(pt|pth|torchscript)$/i, '') + '.json';
}

export function isRandomInit(card: ModelCard): boolean {
  return card.weights === RANDOM_INIT_WEIGHTS;
}

export class ModelCardError extends AppError {
  constructor(readonly file: string, readonly field: string | undefined, message: string, cause?: unknown) {
    super('MODEL_CARD_INVALID', `model card ${file}: ${field ? `field "${field}": ` : ''}${message}`, { cause });
  }
}

const isFiniteNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isNonEmptyString = (v: unknown): v is string => typeof v === 'string' && v.length > 0;

/** Checks an already-parsed object; throws ModelCardError naming `file` and the first bad field. */
export function validateCard(obj: unknown, file: string): ModelCard {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    throw new ModelCardError(file, undefined, 'expected a JSON object');
  }
  const c = obj as Record<string, unknown>;
  const bad = (field: string, what: string): never => {
    throw new ModelCardError(file, field, `${what} (got ${JSON.stringify(c[field])?.slice(0, 80) ?? 'nothing'})`);
  };
  for (const f of ['name', 'variant', 'weights', 'torch_version', 'torchvision_version', 'exported_at'] as const) {
    if (!isNonEmptyString(c[f])) bad(f, 'must be a non-empty string');
  }
  if (typeof c.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(c.sha256)) bad('sha256', 'must be 64 lowercase hex digits');
  const shape = c.input_shape;
  if (!Array.isArray(shape) || shape.length !== 3 || !shape.every(isPositiveInt)) bad('input_shape', 'must be [C, H, W] positive integers');
  if ((shape as number[])[0] !== 3) bad('input_shape', 'must have 3 channels');
  if (!isPositiveInt(c.resize)) bad('resize', 'must be a positive integer');
  if (!isPositiveInt(c.crop)) bad('crop', 'must be a positive integer');
  if ((c.crop as number) > (c.resize as number)) bad('crop', 'must not exceed resize');
  const [, h, w] = shape as number[];
  if (h !== c.crop || w !== c.crop) bad('input_shape', `H and W must equal crop (${String(c.crop)})`);
  for (const f of ['mean', 'std'] as const) {
    const v = c[f];
    if (!Array.isArray(v) || v.length !== 3 || !v.every(isFiniteNum)) bad(f, 'must be 3 finite numbers');
  }
  if (!(c.std as number[]).every((x) => x > 0)) bad('std', 'must be positive');
  const labels = c.labels;
  if (!Array.isArray(labels) || labels.length === 0 || !labels.every(isNonEmptyString)) bad('labels', 'must be a non-empty array of strings');
  if (c.seed !== undefined && !(typeof c.seed === 'number' && Number.isInteger(c.seed))) bad('seed', 'must be an integer');
  if (c.format !== 'torchscript') bad('format', 'must be "torchscript"');
  if (Number.isNaN(Date.parse(c.exported_at as string))) bad('exported_at', 'must be an ISO date');
  return c as unknown as ModelCard;
}

export async function loadCard(path: string): Promise<ModelCard> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ModelCardError(path, undefined, code === 'ENOENT' ? 'file not found (run `npm run export-model`)' : `cannot read: ${String(err)}`, err);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new ModelCardError(path, undefined, `not valid JSON: ${(err as Error).message}`, err);
  }
  return validateCard(obj, path);
}
