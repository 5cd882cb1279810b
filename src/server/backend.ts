/**
 * What the HTTP layer needs from the inference core. The real one (load.ts) wraps Model, the
 * model card and preprocess(); tests inject a small fake so routes and batching can be tested
 * without libtorch.
 */
import type { ModelCard } from '../card.js';

export interface BackendInfo {
  device: string;
  torchVersion: string;
  /** OpenMP threads of each instance. */
  threads: number;
  /** Model instances: forwards that can run at once. */
  instances: number;
  precision: string;
  optimizations: string[];
  loadSeconds: number;
  /** C, H, W of one input image. */
  inputShape: readonly [number, number, number];
  numClasses: number;
}

export interface BatchResult {
  logits: Float32Array;
  instance: number;
  /** Compute seconds on that instance. */
  seconds: number;
}

export interface InferenceBackend {
  readonly card: ModelCard;
  readonly info: BackendInfo;
  /** Image bytes -> normalised CHW floats. Rejects with AppError (4xx) for bad images. */
  preprocess(image: Uint8Array): Promise<Float32Array>;
  /** `batch` images back to back -> batch * numClasses logits, and which instance ran them. */
  forward(input: Float32Array, batch: number): Promise<BatchResult>;
  /** Runs forwards at each batch size; resolves seconds spent. */
  warmup(batchSizes: readonly number[]): Promise<number>;
  /** Returns memory the model freed to the system (called once the model has been idle a while). */
  releaseMemory(): Promise<void>;
  /** Releases the model and the preprocessing threads; resolves once they have stopped. */
  dispose(): Promise<void>;
}
