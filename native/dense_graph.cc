// DenseNet pattern matcher over a frozen TorchScript graph. See dense_graph.h.
#include "dense_graph.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>

#include <stdexcept>

namespace densenet {

using torch::jit::Node;
using torch::jit::Value;

int64_t DenseBlockSpec::outChannels() const {
  int64_t c = inChannels;
  for (const auto& l : layers) c += l.conv2.outChannels();
  return c;
}

int64_t DenseNetSpec::denseLayers() const {
  int64_t n = 0;
  for (const auto& b : blocks) n += static_cast<int64_t>(b.layers.size());
  return n;
}

namespace {

struct NoMatch : std::runtime_error {
  using std::runtime_error::runtime_error;
};

c10::IValue constant(Value* v, const char* what) {
  auto iv = torch::jit::toIValue(v);  // c10::optional or std::optional, by libtorch version
  if (!iv) throw NoMatch(std::string(what) + " is not a constant (is the model frozen?)");
  return *iv;
}

at::Tensor floatTensor(Value* v, const char* what, bool optional = false) {
  c10::IValue iv = constant(v, what);
  if (optional && iv.isNone()) return at::Tensor();
  if (!iv.isTensor() || iv.toTensor().scalar_type() != at::kFloat || iv.toTensor().is_cuda())
    throw NoMatch(std::string(what) + " is not a CPU float tensor");
  return iv.toTensor().contiguous();
}

std::vector<int64_t> intList(Value* v, const char* what) {
  if (v->node()->kind() == c10::prim::ListConstruct) {
    std::vector<int64_t> out;
    for (Value* item : v->node()->inputs()) out.push_back(constant(item, what).toInt());
    return out;
  }
  return constant(v, what).toIntVector();
}

// One number for both spatial dims ([k] or [k, k]).
int64_t square(Value* v, const char* what) {
  std::vector<int64_t> l = intList(v, what);
  if (l.empty() || l.size() > 2 || (l.size() == 2 && l[0] != l[1])) throw NoMatch(std::string(what) + " is not square");
  return l[0];
}

// The compute nodes of the graph in order (constants and list constructions are arguments).
class Cursor {
 public:
  explicit Cursor(torch::jit::Graph& g) {
    for (Node* n : g.nodes())
      if (n->kind() != c10::prim::Constant && n->kind() != c10::prim::ListConstruct) nodes_.push_back(n);
  }
  bool done() const { return pos_ >= nodes_.size(); }
  Node* peek() const {
    if (done()) throw NoMatch("graph ends early");
    return nodes_[pos_];
  }
  bool is(c10::Symbol a) const { return !done() && peek()->kind() == a; }
  bool is(c10::Symbol a, c10::Symbol b) const { return is(a) || is(b); }
  // The next node, which must be of kind a (or b) and take `input` as its first argument,
  // `input` having no other use.
  Node* take(Value* input, c10::Symbol a, c10::Symbol b = c10::Symbol()) {
    Node* n = peek();
    if (n->kind() != a && (b == c10::Symbol() || n->kind() != b))
      throw NoMatch("expected " + std::string(a.toQualString()) + ", found " + n->kind().toQualString());
    if (n->inputs().empty() || n->input(0) != input)
      throw NoMatch(std::string(n->kind().toQualString()) + " does not consume the previous result");
    if (input->uses().size() != 1) throw NoMatch("an intermediate result is used twice");
    ++pos_;
    return n;
  }

 private:
  std::vector<Node*> nodes_;
  size_t pos_ = 0;
};

ConvSpec takeConv(Cursor& c, Value*& x) {
  Node* n = c.take(x, c10::aten::_convolution, c10::aten::conv2d);
  ConvSpec s;
  s.weight = floatTensor(n->input(1), "convolution weight");
  s.bias = floatTensor(n->input(2), "convolution bias", /*optional=*/true);
  if (s.weight.dim() != 4 || s.weight.size(2) != s.weight.size(3)) throw NoMatch("convolution weight is not [OC, IC, K, K]");
  s.stride = square(n->input(3), "convolution stride");
  s.padding = square(n->input(4), "convolution padding");
  const bool traced = n->kind() == c10::aten::_convolution;
  if (square(n->input(5), "convolution dilation") != 1) throw NoMatch("dilated convolution");
  if (traced && constant(n->input(6), "transposed").toBool()) throw NoMatch("transposed convolution");
  if (constant(n->input(traced ? 8 : 6), "groups").toInt() != 1) throw NoMatch("grouped convolution");
  x = n->output();
  if (c.is(c10::aten::relu, c10::aten::relu_)) {
    x = c.take(x, c10::aten::relu, c10::aten::relu_)->output();
    s.relu = true;
  }
  return s;
}

BatchNormSpec takeBatchNormRelu(Cursor& c, Value*& x) {
  Node* n = c.take(x, c10::aten::batch_norm);
  at::Tensor mean = floatTensor(n->input(3), "running_mean"), var = floatTensor(n->input(4), "running_var");
  at::Tensor weight = floatTensor(n->input(1), "batch norm weight", true), bias = floatTensor(n->input(2), "batch norm bias", true);
  if (constant(n->input(5), "training").toBool()) throw NoMatch("batch norm in training mode");
  const double eps = constant(n->input(7), "eps").toDouble();
  if (!weight.defined()) weight = at::ones_like(mean);
  if (!bias.defined()) bias = at::zeros_like(mean);
  BatchNormSpec s;
  // As ATen's inference kernel: alpha = w / sqrt(var + eps), beta = b - mean * alpha.
  s.scale = (weight / at::sqrt(var + eps)).contiguous();
  s.shift = (bias - mean * s.scale).contiguous();
  x = c.take(n->output(), c10::aten::relu, c10::aten::relu_)->output();
  return s;
}

// torch.cat(features, 1) whose list is exactly the block's features so far.
Value* takeCat(Cursor& c, const std::vector<Value*>& features) {
  Node* n = c.peek();
  if (n->kind() != c10::aten::cat) throw NoMatch(std::string("expected aten::cat, found ") + n->kind().toQualString());
  Node* list = n->input(0)->node();
  if (list->kind() != c10::prim::ListConstruct || list->inputs().size() != features.size())
    throw NoMatch("aten::cat does not take the block's features");
  for (size_t i = 0; i < features.size(); ++i)
    if (list->input(i) != features[i]) throw NoMatch("aten::cat does not take the block's features in order");
  if (constant(n->input(1), "cat dim").toInt() != 1) throw NoMatch("aten::cat not over channels");
  c.take(n->input(0), c10::aten::cat);
  return n->output();
}

// A block's features feed only the concatenations.
void onlyInLists(Value* v) {
  for (const torch::jit::Use& u : v->uses())
    if (u.user->kind() != c10::prim::ListConstruct) throw NoMatch("a dense block's feature map is used outside the concatenations");
}

void checkChannels(int64_t expected, int64_t got, const char* what) {
  if (expected != got)
    throw NoMatch(std::string(what) + ": " + std::to_string(got) + " channels where " + std::to_string(expected) + " arrive");
}

void matchOrThrow(torch::jit::Graph& g, DenseNetSpec& spec) {
  if (g.inputs().size() != 2 || g.outputs().size() != 1) throw NoMatch("forward is not forward(self, x) -> Tensor");
  Cursor c(g);
  Value* x = g.inputs()[1];
  spec.conv0 = takeConv(c, x);
  if (!spec.conv0.relu) throw NoMatch("conv0 is not followed by ReLU");
  Node* pool = c.take(x, c10::aten::max_pool2d);
  spec.pool0Kernel = square(pool->input(1), "max_pool2d kernel");
  spec.pool0Stride = square(pool->input(2), "max_pool2d stride");
  spec.pool0Padding = square(pool->input(3), "max_pool2d padding");
  if (square(pool->input(4), "max_pool2d dilation") != 1 || constant(pool->input(5), "ceil_mode").toBool())
    throw NoMatch("max_pool2d with dilation or ceil_mode");
  Value* features0 = pool->output();
  int64_t channels = spec.conv0.outChannels();
  for (;;) {
    DenseBlockSpec block;
    block.inChannels = channels;
    std::vector<Value*> features{features0};
    onlyInLists(features0);
    for (;;) {
      Value* v = takeCat(c, features);
      BatchNormSpec norm = takeBatchNormRelu(c, v);
      checkChannels(channels, norm.scale.numel(), "batch norm");
      if (c.is(c10::aten::adaptive_avg_pool2d)) {  // head
        spec.norm5 = norm;
        Node* gap = c.take(v, c10::aten::adaptive_avg_pool2d);
        if (square(gap->input(1), "adaptive_avg_pool2d size") != 1) throw NoMatch("adaptive_avg_pool2d is not global");
        Node* flat = c.take(gap->output(), c10::aten::flatten);
        if (constant(flat->input(1), "flatten start").toInt() != 1 || constant(flat->input(2), "flatten end").toInt() != -1)
          throw NoMatch("flatten is not flatten(x, 1)");
        Node* fc = c.take(flat->output(), c10::aten::linear);
        spec.fcWeight = floatTensor(fc->input(1), "linear weight");
        spec.fcBias = floatTensor(fc->input(2), "linear bias", true);
        if (spec.fcWeight.dim() != 2) throw NoMatch("linear weight is not 2-D");
        checkChannels(channels, spec.fcWeight.size(1), "linear");
        if (!spec.fcBias.defined()) spec.fcBias = at::zeros({spec.fcWeight.size(0)});
        if (!c.done()) throw NoMatch("nodes after the classifier");
        if (g.outputs()[0] != fc->output() || fc->output()->uses().size() != 1)
          throw NoMatch("forward does not return the classifier's output");
        spec.blocks.push_back(std::move(block));
        return;
      }
      ConvSpec conv = takeConv(c, v);
      checkChannels(channels, conv.inChannels(), "convolution");
      if (conv.kernel() != 1 || conv.stride != 1 || conv.padding != 0) throw NoMatch("bottleneck/transition convolution is not 1x1");
      if (c.is(c10::aten::avg_pool2d)) {  // transition
        if (conv.relu) throw NoMatch("transition convolution followed by ReLU");
        Node* ap = c.take(v, c10::aten::avg_pool2d);
        if (square(ap->input(1), "avg_pool2d kernel") != 2 || square(ap->input(2), "avg_pool2d stride") != 2 ||
            square(ap->input(3), "avg_pool2d padding") != 0 || constant(ap->input(4), "ceil_mode").toBool() ||
            !constant(ap->input(6), "divisor_override").isNone())
          throw NoMatch("transition pooling is not avg_pool2d(2, 2)");
        block.hasTransition = true;
        block.transitionNorm = norm;
        block.transitionConv = conv;
        spec.blocks.push_back(std::move(block));
        features0 = ap->output();
        channels = conv.outChannels();
        break;
      }
      if (!conv.relu) throw NoMatch("dense layer conv1 is not followed by ReLU");
      ConvSpec conv2 = takeConv(c, v);
      checkChannels(conv.outChannels(), conv2.inChannels(), "dense layer conv2");
      if (conv2.relu || conv2.stride != 1 || 2 * conv2.padding + 1 != conv2.kernel())
        throw NoMatch("dense layer conv2 does not keep the size");
      onlyInLists(v);
      block.layers.push_back(DenseLayerSpec{norm, conv, conv2});
      features.push_back(v);
      channels += conv2.outChannels();
    }
  }
}

}  // namespace

bool matchDenseNet(torch::jit::Graph& graph, DenseNetSpec& spec, std::string& why) {
  try {
    DenseNetSpec s;
    matchOrThrow(graph, s);
    if (s.blocks.empty() || s.denseLayers() == 0) throw NoMatch("no dense block");
    spec = std::move(s);
    return true;
  } catch (const NoMatch& e) {
    why = e.what();
  } catch (const c10::Error& e) {
    why = e.what_without_backtrace();
  }
  return false;
}

}  // namespace densenet
