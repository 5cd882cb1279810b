# node-gyp alternative to CMakeLists.txt (cmake-js is the default build): the same sources into
# build/Release/densenet.node and build/Release/densenet_image.node.
# `npm run build:native:gyp` (= node-gyp rebuild). Needs Node's headers locally: Debian's are
# found with nodedir=/usr (npm config set nodedir /usr, or `node-gyp rebuild --nodedir=/usr`);
# node-gyp otherwise tries to download them.
# Default libtorch: Debian's libtorch-dev (/usr/include, /usr/lib/x86_64-linux-gnu). Another one:
# LIBTORCH=/path/to/libtorch (a zip/pip libtorch with include/ and lib/); TORCH_CXX11_ABI=0 for
# a pre-C++11-ABI build. Linking torch_cuda (when present) is left to the CMake build.
# The DenseNet executor (native/dense_block.cc) is compiled with oneDNN only for Debian's libtorch
# (no LIBTORCH) when libdnnl-dev's headers exist, as in CMakeLists.txt.
{
  "variables": {
    "libtorch_inc%": "<!(node -p \"process.env.LIBTORCH ? process.env.LIBTORCH + '/include' : '/usr/include'\")",
    "libtorch_lib%": "<!(node -p \"process.env.LIBTORCH ? process.env.LIBTORCH + '/lib' : '/usr/lib/x86_64-linux-gnu'\")",
    "cxx11_abi%": "<!(node -p \"process.env.TORCH_CXX11_ABI || '1'\")",
    "have_dnnl%": "<!(node -p \"!process.env.LIBTORCH && require('fs').existsSync('/usr/include/oneapi/dnnl/dnnl.hpp') ? 1 : 0\")"
  },
  "targets": [
    {
      "target_name": "densenet",
      "sources": [
        "native/addon.cc", "native/engine.cc", "native/worker.cc",
        "native/dense_graph.cc", "native/dense_block.cc", "native/dense_kernels.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native",
        "<(libtorch_inc)",
        "<(libtorch_inc)/torch/csrc/api/include"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_CPP_EXCEPTIONS_ALL",
        "_GLIBCXX_USE_CXX11_ABI=<(cxx11_abi)"
      ],
      # Node's common.gypi disables exceptions and RTTI; libtorch needs both.
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-O3", "-Wno-unused-parameter"],
      "libraries": ["-L<(libtorch_lib)", "-Wl,-rpath,<(libtorch_lib)", "-ltorch", "-ltorch_cpu", "-lc10"],
      "conditions": [
        ["have_dnnl==1", {"defines": ["DENSENET_HAVE_DNNL"], "libraries": ["-ldnnl"]}]
      ]
    },
    {
      # The image addon for the preprocessing workers: no libtorch.
      "target_name": "densenet_image",
      "sources": ["native/image/resample.cc", "native/image/addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native/image"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O3"]
    }
  ]
}
