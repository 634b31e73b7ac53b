#pragma once

namespace credits {

// A visitor from lambdas, one per alternative: std::visit(overloaded{[](const a&) {...}, [](const b&) {...}}, v).
template <class... F>
struct overloaded : F... {
  using F::operator()...;
};

}  // namespace credits
