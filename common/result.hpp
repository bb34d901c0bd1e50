// Result<T>: a value or an Error (error.hpp: a one-line message and the errno behind it), for
// functions whose failure is an ordinary outcome (bad user input, a missing file). GCC 12 has no
// std::expected; this is the small part of it we need. Reading the wrong side is a programming
// error and throws std::logic_error instead of being undefined behaviour, so a missed check fails
// loudly in tests and never corrupts memory.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

#include "common/error.hpp"

namespace vcpilot {

namespace detail {
[[noreturn]] inline void throw_value_of_error(const Error& error) {
    throw std::logic_error("Result::value() called on an error: " + error.message);
}
[[noreturn]] inline void throw_error_of_value() {
    throw std::logic_error("Result::error() called on a success");
}
}  // namespace detail

template <typename T>
class [[nodiscard]] Result {
  public:
    // Implicit, so that functions can `return value;` or `return Error{"..."};`.
    Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}
    Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}

    bool ok() const noexcept { return state_.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }

    T& value() & {
        check_value();
        return std::get<0>(state_);
    }
    const T& value() const& {
        check_value();
        return std::get<0>(state_);
    }
    T&& value() && {
        check_value();
        return std::get<0>(std::move(state_));
    }

    const Error& error() const {
        if (ok()) {
            detail::throw_error_of_value();
        }
        return std::get<1>(state_);
    }

    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T&& operator*() && { return std::move(*this).value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

  private:
    void check_value() const {
        if (!ok()) {
            detail::throw_value_of_error(std::get<1>(state_));
        }
    }

    std::variant<T, Error> state_;
};

template <>
class [[nodiscard]] Result<void> {
  public:
    Result() = default;
    Result(Error error) : error_(std::move(error)), failed_(true) {}

    bool ok() const noexcept { return !failed_; }
    explicit operator bool() const noexcept { return ok(); }

    // Exists so that generic code can call value() on any Result.
    void value() const {
        if (failed_) {
            detail::throw_value_of_error(error_);
        }
    }
    const Error& error() const {
        if (!failed_) {
            detail::throw_error_of_value();
        }
        return error_;
    }

  private:
    Error error_;
    bool failed_ = false;
};

using Status = Result<void>;

}  // namespace vcpilot
