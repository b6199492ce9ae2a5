# Writes the text of INPUT as `static const char kDevicesJson[] = R"...";`.
file(READ "${INPUT}" text)
file(WRITE "${OUTPUT}" "static const char kDevicesJson[] = R\"tlcjson(${text})tlcjson\";\n")
