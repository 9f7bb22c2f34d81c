// expect_error<E>(fn, text): fn must throw E (or a subclass) whose message contains `text`.
#pragma once

#include <gtest/gtest.h>

#include <string>

namespace bnorm::test {

template <typename E, typename Fn>
void expect_error(Fn fn, const std::string& text) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one containing: " << text;
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << text;
  }
}

}  // namespace bnorm::test
