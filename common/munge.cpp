#include "common/munge.hpp"

#include <munge.h>

#include <cstdlib>
#include <fmt/format.h>
#include <memory>

namespace vcpilot {

namespace {

struct ContextDeleter {
    void operator()(munge_ctx_t context) const { munge_ctx_destroy(context); }
};
using Context = std::unique_ptr<std::remove_pointer_t<munge_ctx_t>, ContextDeleter>;

struct FreeDeleter {
    void operator()(void* memory) const { std::free(memory); }
};

Result<Context> make_context(const std::string& socket) {
    Context context(munge_ctx_create());
    if (!context) {
        return Error{"MUNGE: cannot create a context (out of memory)"};
    }
    if (!socket.empty()) {
        if (munge_ctx_set(context.get(), MUNGE_OPT_SOCKET, socket.c_str()) != EMUNGE_SUCCESS) {
            return Error{fmt::format("MUNGE: cannot use the socket {}: {}", socket,
                                     munge_ctx_strerror(context.get()))};
        }
    }
    return context;
}

}  // namespace

Result<std::string> munge_encode(std::string_view payload, const std::string& socket) {
    auto context = make_context(socket);
    if (!context) {
        return context.error();
    }
    char* raw = nullptr;
    const munge_err_t error =
        ::munge_encode(&raw, context->get(), payload.data(), static_cast<int>(payload.size()));
    std::unique_ptr<char, FreeDeleter> credential(raw);
    if (error != EMUNGE_SUCCESS) {
        return Error{
            fmt::format("MUNGE: cannot mint a credential: {}", munge_ctx_strerror(context->get()))};
    }
    return std::string(credential.get());
}

Result<MungeIdentity> munge_decode(std::string_view credential, const std::string& socket) {
    if (credential.empty()) {
        return Error{"no MUNGE credential"};
    }
    if (credential.size() > kMaxMungeCredential) {
        return Error{fmt::format("the MUNGE credential is {} bytes, more than the {} allowed",
                                 credential.size(), kMaxMungeCredential)};
    }
    auto context = make_context(socket);
    if (!context) {
        return context.error();
    }
    const std::string text(credential);  // libmunge wants a NUL-terminated string
    void* raw = nullptr;
    int length = 0;
    MungeIdentity identity;
    const munge_err_t error =
        ::munge_decode(text.c_str(), context->get(), &raw, &length, &identity.uid, &identity.gid);
    std::unique_ptr<void, FreeDeleter> payload(raw);
    if (error != EMUNGE_SUCCESS) {
        return Error{
            fmt::format("MUNGE credential refused: {}", munge_ctx_strerror(context->get()))};
    }
    if (payload && length > 0) {
        identity.payload.assign(static_cast<const char*>(payload.get()),
                                static_cast<std::size_t>(length));
    }
    return identity;
}

}  // namespace vcpilot
