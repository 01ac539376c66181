// One line on stderr for an operator: "<program>: <UTC time to the millisecond> <message>". For
// events a person may need to line up with others (a node going down and coming back, an error
// a program was given), not for every request.
#pragma once

#include <sys/time.h>
#include <time.h>

#include <cstdio>
#include <string>

namespace quorumfs {

inline void LogLine(const char* program, const std::string& message) {
  timeval tv;
  ::gettimeofday(&tv, nullptr);
  tm t;
  ::gmtime_r(&tv.tv_sec, &t);
  char when[96];
  std::snprintf(when, sizeof(when), "%04d-%02d-%02d %02d:%02d:%02d.%03d", t.tm_year + 1900,
                t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                static_cast<int>(tv.tv_usec / 1000));
  std::fprintf(stderr, "%s: %s %s\n", program, when, message.c_str());
}

}  // namespace quorumfs
