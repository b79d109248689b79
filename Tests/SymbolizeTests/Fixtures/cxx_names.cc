// Symbolize test fixture: C++ names as gdb prints them for print/a (mangled linkage names,
// qualified names with parameter lists where there is no linkage name), namespaces,
// anonymous namespaces, virtual functions, templates, lambdas, the standard library.
#include <vector>
#include <string>
#include <map>
#include <cstdio>
namespace { int anon(int x) { return x * 7; } }
namespace ns {
struct Box { int v; __attribute__((noinline)) int get(int k) const { return v * k; } static int twice(int x); };
int Box::twice(int x) { return x * 2; }
static __attribute__((noinline)) int hidden(const char *p, int x) { return *p ^ x; }
}
struct S { virtual ~S() {} virtual int f(const std::string &s) { return (int)s.size(); } };
template <class T> T sum(const std::vector<T> &v) { T t{}; for (auto &x : v) t += x; return t; }
int main(int argc, char **argv) {
  std::vector<int> v{1,2,3}; std::map<std::string,int> m; m[argv[0]] = argc;
  S s; auto l = [&](int k) { return k + anon(argc); };
  ns::Box b{argc};
  std::printf("%d %d %d %zu %d %d %d\n", sum(v), s.f(argv[0]), l(3), m.size(), b.get(argc), ns::Box::twice(argc),
              ns::hidden(argv[0], argc));
}
