#ifndef GATEMQ_VERSION_H
#define GATEMQ_VERSION_H
#define GATEMQ_VERSION "0.1.0"
#endif
