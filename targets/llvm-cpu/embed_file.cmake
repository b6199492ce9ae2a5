# Writes the bytes of INPUT as `static const unsigned char NAME[] = {...};`
# to OUTPUT (appending with APPEND=1).
file(READ "${INPUT}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
set(text "static const unsigned char ${NAME}[] = {\n${bytes}};\n")
if(APPEND)
  file(APPEND "${OUTPUT}" "${text}")
else()
  file(WRITE "${OUTPUT}" "${text}")
endif()
