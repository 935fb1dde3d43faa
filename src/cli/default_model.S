// The default model (models/stories3M-layerskip.gguf), linked into the binary so `skiff generate`
// works without -m from anywhere. Symbols: skiff_default_model_begin / _end.
  .section .rodata
  .balign 64
  .global skiff_default_model_begin
  .global skiff_default_model_end
skiff_default_model_begin:
  .incbin SKIFF_DEFAULT_MODEL_PATH
skiff_default_model_end:
  .byte 0
  .section .note.GNU-stack,"",@progbits
