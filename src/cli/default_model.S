// The default models, linked into the binary so commands work without -m from anywhere:
// models/stories3M-layerskip.gguf (skiff_default_model_begin / _end) and, for `skiff memory`,
// the reader trained with block attention, models/stories3M-reader.gguf
// (skiff_reader_model_begin / _end).
  .section .rodata
  .balign 64
  .global skiff_default_model_begin
  .global skiff_default_model_end
skiff_default_model_begin:
  .incbin SKIFF_DEFAULT_MODEL_PATH
skiff_default_model_end:
  .byte 0
  .balign 64
  .global skiff_reader_model_begin
  .global skiff_reader_model_end
skiff_reader_model_begin:
  .incbin SKIFF_READER_MODEL_PATH
skiff_reader_model_end:
  .byte 0
  .section .note.GNU-stack,"",@progbits
