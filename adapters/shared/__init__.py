"""What more than one adapter needs, held once: each module is named after what it holds.

The adapters (REST, SOAP, Tryton) each own their protocol; the pieces here are not about any
protocol or named system, and not about the adapter contract either (that is
`middleware.adapter`): they are the small mechanics several adapters implement alike —
dotted paths and watermark timestamps in documents (`documents`), the boundary an
incremental read keeps at its watermark (`incremental`), secret-free error excerpts
(`scrubber`) and ordered-per-record concurrent writes (`lanes`). An adapter imports what it
needs from here rather than copying it, so a fix lands in every adapter at once.
"""
