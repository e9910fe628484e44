{{/*
Names and labels shared by every template.
*/}}

{{/* The chart name, at most 63 characters (a DNS label). */}}
{{- define "gatewatch.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Base name of every object: the release name, or "<release>-gatewatch" when the
release name does not already say gatewatch. Short enough for the "-uninstall"
suffix to stay a DNS label.
*/}}
{{- define "gatewatch.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "gatewatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gatewatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gatewatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "gatewatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: admission-controller
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gatewatch.rulesConfigMapName" -}}
{{- printf "%s-rules" (include "gatewatch.fullname" .) }}
{{- end }}

{{- define "gatewatch.configConfigMapName" -}}
{{- printf "%s-config" (include "gatewatch.fullname" .) }}
{{- end }}

{{- define "gatewatch.uninstallName" -}}
{{- printf "%s-uninstall" (include "gatewatch.fullname" .) }}
{{- end }}

{{/* repository:tag, or repository:tag@digest when a digest is pinned. */}}
{{- define "gatewatch.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end }}

{{/* Paths inside the container; the Dockerfile and docs/configuration.md use the same. */}}
{{- define "gatewatch.configPath" -}}/etc/gatewatch/config.yaml{{- end }}
{{- define "gatewatch.rulesDir" -}}/etc/gatewatch/rules{{- end }}
{{- define "gatewatch.tlsDir" -}}/etc/gatewatch/tls{{- end }}
{{- define "gatewatch.alertsDir" -}}/etc/gatewatch/alerts{{- end }}
{{- define "gatewatch.alertSpillDir" -}}/var/lib/gatewatch/alerts{{- end }}
{{- define "gatewatch.clientCADir" -}}/etc/gatewatch/client-ca{{- end }}

{{/* "true" when webhook.clientCAFrom names a Secret or a ConfigMap, else empty. */}}
{{- define "gatewatch.clientCAEnabled" -}}
{{- if or .Values.webhook.clientCAFrom.secretName .Values.webhook.clientCAFrom.configMapName }}true{{ end }}
{{- end }}

{{/*
Checks values.schema.json cannot express (they compare two values); each
mirrors a rule of gatewatch's own Settings, so `helm install` refuses what
gatewatch would refuse at startup.
*/}}
{{- define "gatewatch.validate" -}}
{{- if le (.Values.webhook.timeoutSeconds | float64) (mulf 2 .Values.podLookup.timeoutSeconds) -}}
{{- fail (printf "podLookup.timeoutSeconds (%v) must be less than half of webhook.timeoutSeconds (%v): a review may do two lookups" .Values.podLookup.timeoutSeconds .Values.webhook.timeoutSeconds) -}}
{{- end -}}
{{- if lt (int .Values.terminationGracePeriodSeconds) (add .Values.preStopSleepSeconds .Values.server.drainSeconds .Values.webhook.timeoutSeconds | int) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must cover preStopSleepSeconds (%v) plus server.drainSeconds (%v) plus webhook.timeoutSeconds (%v): reviews in flight would be cut off" .Values.terminationGracePeriodSeconds .Values.preStopSleepSeconds .Values.server.drainSeconds .Values.webhook.timeoutSeconds) -}}
{{- end -}}
{{- if and (eq .Values.webhook.failurePolicy "Fail") (eq .Values.webhook.enforceFailurePolicy "Ignore") -}}
{{- fail "webhook.enforceFailurePolicy: Ignore with webhook.failurePolicy: Fail would fail open only where gatewatch enforces" -}}
{{- end -}}
{{- if and .Values.webhook.clientCAFrom.secretName .Values.webhook.clientCAFrom.configMapName -}}
{{- fail "webhook.clientCAFrom: set secretName or configMapName, not both" -}}
{{- end -}}
{{- $deadline := .Values.server.limits.deadlineSeconds -}}
{{- if and (not (kindIs "invalid" $deadline)) (ge ($deadline | float64) (.Values.webhook.timeoutSeconds | float64)) -}}
{{- fail (printf "server.limits.deadlineSeconds (%v) must be less than webhook.timeoutSeconds (%v): gatewatch answers before the API server gives up" $deadline .Values.webhook.timeoutSeconds) -}}
{{- end -}}
{{- end }}

{{/* "true" when the cluster serves ValidatingAdmissionPolicy v1 (Kubernetes 1.30+), else empty.
`helm install/upgrade` asks the cluster; `helm template` needs
--api-versions admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy. */}}
{{- define "gatewatch.admissionPoliciesServed" -}}
{{- if .Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy" }}true{{ end }}
{{- end }}

{{/* "true" when the namespace label guard is rendered: enabled, and the cluster serves the API. */}}
{{- define "gatewatch.guardLabelsRendered" -}}
{{- if and .Values.namespaces.guardLabels.enabled (include "gatewatch.admissionPoliciesServed" .) }}true{{ end }}
{{- end }}

{{/* Namespaces the webhook never sees besides kube-system and the release namespace. */}}
{{- define "gatewatch.exemptNamespaces" -}}
{{- $exempt := .Values.namespaces.exempt | default list -}}
{{- if eq .Values.certificates.mode "cert-manager" -}}
{{- $exempt = append $exempt .Values.certificates.certManager.namespace -}}
{{- end -}}
{{- toJson ($exempt | uniq) -}}
{{- end }}

{{/* Restricted Pod Security, shared by the operator and the uninstall Job. */}}
{{- define "gatewatch.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "gatewatch.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "gatewatch.alertsUrlFromSecret" -}}
{{- if .Values.alerts.http.existingSecret.name }}true{{ end }}
{{- end }}

{{/*
The operator's config file (docs/configuration.md), built as a dict and
serialized once so every key is spelled exactly like gatewatch reads it.
*/}}
{{- define "gatewatch.config" -}}
{{- $ruleFiles := list -}}
{{- if .Values.rules.includeDefault -}}
{{- $ruleFiles = append $ruleFiles (printf "%s/rules.yaml" (include "gatewatch.rulesDir" .)) -}}
{{- end -}}
{{- range $file, $_ := .Values.rules.extraFiles -}}
{{- $ruleFiles = append $ruleFiles (printf "%s/%s" (include "gatewatch.rulesDir" $) $file) -}}
{{- end -}}
{{- $http := dict
      "batchSize" .Values.alerts.http.batchSize
      "flushIntervalSeconds" .Values.alerts.http.flushIntervalSeconds
      "bufferSize" .Values.alerts.http.bufferSize
      "requestTimeoutSeconds" .Values.alerts.http.requestTimeoutSeconds -}}
{{- if .Values.alerts.http.spill.enabled -}}
{{- $_ := set $http "spillFile" (printf "%s/spill.ndjson" (include "gatewatch.alertSpillDir" .)) -}}
{{- $_ := set $http "spillMaxBytes" (.Values.alerts.http.spill.maxBytes | int64) -}}
{{- end -}}
{{- if include "gatewatch.alertsUrlFromSecret" . -}}
{{- $_ := set $http "urlFile" (printf "%s/%s" (include "gatewatch.alertsDir" .) .Values.alerts.http.existingSecret.key) -}}
{{- else if .Values.alerts.http.url -}}
{{- $_ := set $http "url" .Values.alerts.http.url -}}
{{- end -}}
{{- $webhook := dict
      "configurationName" .Values.webhook.configurationName
      "failurePolicy" .Values.webhook.failurePolicy
      "enforceFailurePolicy" .Values.webhook.enforceFailurePolicy
      "timeoutSeconds" .Values.webhook.timeoutSeconds
      "path" .Values.webhook.path
      "generation" (.Values.webhook.generation | default .Release.Revision | int)
      "service" (dict
          "name" (include "gatewatch.fullname" .)
          "namespace" .Release.Namespace
          "port" .Values.webhook.service.port) -}}
{{- if include "gatewatch.clientCAEnabled" . -}}
{{- $_ := set $webhook "clientCA" (printf "%s/%s" (include "gatewatch.clientCADir" .) .Values.webhook.clientCAFrom.key) -}}
{{- end -}}
{{- $certificates := dict "secretName" .Values.certificates.secretName "workDir" "/tmp/gatewatch" -}}
{{- if eq .Values.certificates.mode "cert-manager" -}}
{{- $tls := include "gatewatch.tlsDir" . -}}
{{- $_ := set $certificates "mode" "files" -}}
{{- $_ := set $certificates "certFile" (printf "%s/tls.crt" $tls) -}}
{{- $_ := set $certificates "keyFile" (printf "%s/tls.key" $tls) -}}
{{- $_ := set $certificates "caFile" (printf "%s/ca.crt" $tls) -}}
{{- else -}}
{{- $_ := set $certificates "mode" "self-managed" -}}
{{- end -}}
{{- $config := dict
      "mode" .Values.mode
      "namespace" .Release.Namespace
      "namespaces" (dict
          "modes" .Values.namespaces.modes
          "selectors" .Values.namespaces.selectors
          "protectedLabels" (.Values.namespaces.protectedLabels | default list)
          "exempt" (include "gatewatch.exemptNamespaces" . | fromJsonArray)
          "ignoreLabel" .Values.namespaces.ignoreLabel)
      "rules" (dict
          "packaged" false
          "files" $ruleFiles
          "packs" .Values.rules.packs
          "packExemptions" .Values.rules.packExemptions
          "reloadIntervalSeconds" .Values.rules.reloadIntervalSeconds
          "allowEmpty" .Values.rules.allowEmpty
          "configMapName" (include "gatewatch.rulesConfigMapName" .))
      "webhook" $webhook
      "server" (dict
          "host" "0.0.0.0"
          "port" .Values.server.port
          "metricsPort" .Values.server.metricsPort
          "drainSeconds" .Values.server.drainSeconds
          "limits" (.Values.server.limits | default dict))
      "certificates" $certificates
      "alerts" (dict "stdout" .Values.alerts.stdout "dryRun" .Values.alerts.dryRun "http" $http)
      "events" (dict "queueSize" .Values.events.queueSize)
      "newTerms" (dict "configMapName" .Values.newTerms.configMapName)
      "podLookup" (dict
          "timeoutSeconds" .Values.podLookup.timeoutSeconds
          "cacheTtlSeconds" .Values.podLookup.cacheTtlSeconds) -}}
{{- toYaml $config }}
{{- end }}
