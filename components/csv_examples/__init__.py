"""dxpipe's CSV ExampleGen executor: CsvExampleGen's examples, streamed in bounded memory."""
