/* Stand-in for std::ios_base_library_init() (GLIBCXX_3.4.32, GCC 13+).
   On libstdc++ older than GCC 13 the iostreams are initialised by static ios_base::Init objects,
   so an empty function is a correct replacement. Linked into libLibTorchSharp.so only on such hosts. */
void _ZSt21ios_base_library_initv(void) {}
