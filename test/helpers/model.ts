/**
 * The default exported model for tests: exports it on first use (seeded random weights offline),
 * then reuses it. The exporter is idempotent and holds a cross-process lock, so parallel test
 * files never export twice and never see a half-written file.
 */
import { DEFAULT_MODEL_PATH, exportModel } from '../../scripts/export-model.js';

export interface DefaultModel {
  modelPath: string;
  cardPath: string;
}

let pending: Promise<DefaultModel> | undefined;

export function ensureDefaultModel(): Promise<DefaultModel> {
  pending ??= exportModel({ out: DEFAULT_MODEL_PATH, log: () => {} }).then(
    ({ modelPath, cardPath }) => ({ modelPath, cardPath }),
    (err: unknown) => {
      pending = undefined;
      throw err;
    },
  );
  return pending;
}
