"""Model-independent quality measures of audio: speaker similarity, DNSMOS, recognition error, pitch and signal measures, and the corpus's own levels."""
