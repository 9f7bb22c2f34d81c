# Applies BNORM_SANITIZE (e.g. "address,undefined") to everything built after this point.
if(BNORM_SANITIZE)
  add_compile_options(-fsanitize=${BNORM_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${BNORM_SANITIZE})
endif()
