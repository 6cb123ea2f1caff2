//! Built-in passes, one per file. They use only the public API that a user
//! embedding onnxq's pass manager has. (The pass manager lands next.)
