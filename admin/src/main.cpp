#include <cstdlib>
#include <iostream>

#include "credits/admin/admin.hpp"

int main(int argc, char** argv) {
  using namespace credits::admin;
  options o;
  command c;
  try {
    o = load_options([](const char* name) { return std::getenv(name); });
    c = parse_args(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::invalid_argument& ex) {
    std::cerr << "credits-admin: " << ex.what() << "\n" << usage;
    return 2;
  }
  try {
    return run(o, c, std::cout, std::cerr);
  } catch (const std::exception& ex) {
    std::cerr << "credits-admin: " << ex.what() << "\n";
    return 1;
  }
}
