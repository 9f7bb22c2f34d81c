# bnorm_set_warnings(target): -Wall -Wextra and friends, -Werror when BNORM_WERROR.
# -ffp-contract=off: no silent FMA contraction, so the same expression gives the same bits in
# every kernel and layout (the determinism promise); kernels that want FMA call it explicitly.
function(bnorm_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wshadow -Wnon-virtual-dtor -Wpedantic
                                           -ffp-contract=off)
  if(BNORM_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
