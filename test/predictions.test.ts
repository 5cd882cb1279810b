// src/predictions.ts: the ranking /predict and `npm run classify` share.
import t from 'tap';
import { softmaxTopk } from '../src/predictions.js';

t.test('softmax, descending, rounded to 4 decimals', async (t) => {
  const logits = Float32Array.from([0, Math.log(3), Math.log(6)]);
  t.same(softmaxTopk(logits, 2, ['a', 'b', 'c']), [
    { class_id: 2, class_name: 'c', confidence: 0.6 },
    { class_id: 1, class_name: 'b', confidence: 0.3 },
  ]);
  const p = softmaxTopk(Float32Array.from([1, 2, 3]), 3, []);
  t.same(p.map((x) => x.confidence), [0.6652, 0.2447, 0.09], 'rounded, not raw');
});

t.test('ties keep the lower class id first; k beyond the classes gives them all', async (t) => {
  t.same(softmaxTopk(Float32Array.from([1, 5, 5, 1]), 10, []).map((x) => x.class_id), [1, 2, 0, 3]);
});

t.test('a class without a label is named class_<id>', async (t) => {
  t.same(softmaxTopk(Float32Array.from([0, 9]), 1, ['only-first']), [{ class_id: 1, class_name: 'class_1', confidence: 0.9999 }]);
});

t.test('large logits do not overflow', async (t) => {
  const p = softmaxTopk(Float32Array.from([1000, 1000]), 2, ['x', 'y']);
  t.same(p.map((x) => x.confidence), [0.5, 0.5]);
});
