// Jenkins shared-library step for `pipeline`: runs one stage with
// `--output json` and returns its result, parsed (a Map).
//
// Named pipelineStep, not pipeline: Declarative Pipeline already defines a
// global variable `pipeline` (the `pipeline { }` block), and a library
// variable of the same name would shadow it or be shadowed by it.
//
//   def built = pipelineStep(command: 'build')          // built.ami
//   pipelineStep(command: 'deploy', env: 'staging')
//   pipelineStep(command: 'deploy', slot: 'idle')        // the slot www does not point at
//   pipelineStep(command: 'promote')                     // to it, once it runs the commit
//   pipelineStep(command: 'test', args: 'cargo test --locked')
//
// Arguments: command (test|build|deploy|promote|rollback|status, required),
// env or slot (deploy; slot: 'idle'), to (promote, optional), commit (default GIT_COMMIT, which the
// binary reads itself), args (extra arguments split on spaces; for test, the test command),
// config (default pipeline.yaml), binary (default `pipeline` on PATH),
// failOnError (default true: a non-zero exit fails the build, with the error).
// Needs the Pipeline Utility Steps plugin (readJSON). See docs/ci.md.

def call(Map opts = [:]) {
    String command = opts.command ?: error('pipeline: the command argument is required')
    List<String> argv = [opts.binary ?: 'pipeline', '--config', opts.config ?: 'pipeline.yaml',
                         '--output', 'json', command]
    switch (command) {
        case 'deploy':
            if (opts.slot) { argv += ['--slot', opts.slot as String] }
            else if (opts.env) { argv += ['--env', opts.env as String] }
            else { error('pipeline: deploy needs env or slot') }
            break
        case 'promote':
            if (opts.to) { argv += ['--to', opts.to as String] }
            break
        case ['test', 'build', 'rollback', 'status']:
            break
        default:
            error("pipeline: unknown command '${command}' (test, build, deploy, promote, rollback, status)")
    }
    if (opts.commit && command in ['test', 'build', 'deploy', 'promote']) {
        argv += ['--commit', opts.commit as String]
    }
    List<String> extra = opts.args ? (opts.args as String).tokenize(' ') : []
    argv += (command == 'test') ? ['--'] + extra : extra

    String out = ".pipeline-${command}-${env.BUILD_NUMBER ?: '0'}.json"
    int code = sh(script: argv.collect { shellQuote(it) }.join(' ') + " > ${shellQuote(out)}",
                  returnStatus: true)
    String text = readFile(out).trim()
    sh(script: "rm -f ${shellQuote(out)}")
    Map result = text ? readJSON(text: text) : [ok: false, error: 'no output']
    if (code != 0 && opts.get('failOnError', true)) {
        error("pipeline ${command} failed (exit ${code}): ${result.error ?: 'see the log'}")
    }
    result.exit_code = result.exit_code ?: code
    return result
}

private String shellQuote(String s) {
    return "'" + s.replace("'", "'\\''") + "'"
}
